//! Before a removal, with `[graph]` configured: does Entra still make the user a member of the
//! group? A standing assignment (direct or permanent membership) means the user keeps the access
//! for another reason; an activation Graph still lists means Graph has not caught up with PIM yet
//! (it can lag by minutes), or our deactivation is wrong. Either way the removal is held, and
//! since the pair stays in every cycle's work while AWS may hold it, it is asked about again at
//! each cycle until Graph agrees or a grant makes it moot (docs/correctness.md).

use time::OffsetDateTime;

use super::Provisioner;
use crate::domain::Subject;
use crate::telemetry::error_chain;

/// Why a removal is held: a standing assignment.
const STANDING_IN_ENTRA: &str = "Microsoft Graph lists a standing (direct or permanent) membership of the user in the group: not removed";
/// Why a removal is held: an activation Graph still lists.
const ACTIVE_IN_ENTRA: &str = "Microsoft Graph still lists an active PIM activation of the user in the group (Graph may lag behind PIM): not removed now, asked again at the next cycle";

impl Provisioner {
    /// Why Entra says the subject should keep the membership, or `None` to go ahead. When Graph
    /// cannot be asked, the removal goes ahead: the grants say the access has ended, and
    /// revoking privileged access must not wait for Graph to come back.
    pub(super) async fn entra_keeps(&self, subject: &Subject) -> Option<&'static str> {
        let graph = self.graph.as_ref()?;
        let instances = match graph
            .active_member_assignments(&subject.group_id, Some(&subject.principal_id))
            .await
        {
            Ok(instances) => instances,
            Err(e) => {
                tracing::warn!(principal_id = %subject.principal_id, group_id = %subject.group_id,
                    error.message = %error_chain(&e),
                    "cannot ask Graph about the membership before removing it; removing on the strength of the grants");
                return None;
            }
        };
        let now = OffsetDateTime::now_utc();
        let active: Vec<_> = instances
            .iter()
            .filter(|i| i.principal_id == subject.principal_id)
            .filter(|i| i.end.is_none_or(|end| end > now))
            .collect();
        if active.iter().any(|i| !i.is_activation()) {
            Some(STANDING_IN_ENTRA)
        } else if !active.is_empty() {
            Some(ACTIVE_IN_ENTRA)
        } else {
            None
        }
    }
}
