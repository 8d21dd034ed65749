//! The net desired state of one user in one group (DESIGN.md §5, step 2), as a pure function.
//!
//! The newest event by `occurredAt` decides: an activation that is still running means member,
//! anything else (a deactivation, or an activation whose `endsAt` has passed) means not a member.
//! So an activation that arrived after a deactivation wins, and a deactivation of a membership a
//! newer activation renewed does nothing.

use time::OffsetDateTime;

use crate::domain::{Action, EventKind};
use crate::store::cycles::PendingPair;

/// What a cycle does for one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// AWS already reflects the desired state, as far as pimbridge confirmed it.
    Skip { present: bool },
    /// Send this change to AWS.
    Apply(Action),
}

impl Step {
    /// Whether the user should be a member once the step is done.
    pub fn present(self) -> bool {
        match self {
            Self::Skip { present } => present,
            Self::Apply(action) => action == Action::Add,
        }
    }
}

/// Decides the step for a pair at the cycle's cutoff.
pub fn step(pair: &PendingPair, cutoff: OffsetDateTime) -> Step {
    let present = pair.latest_kind == EventKind::Activation
        && pair.latest_ends_at.is_none_or(|ends| ends > cutoff);
    if pair.confirmed_present == Some(present) {
        Step::Skip { present }
    } else if present {
        Step::Apply(Action::Add)
    } else {
        Step::Apply(Action::Remove)
    }
}

/// Why a removal happens, for the provisioning log.
pub fn removal_reason(pair: &PendingPair, cutoff: OffsetDateTime) -> &'static str {
    match (pair.latest_kind, pair.latest_ends_at) {
        (EventKind::Activation, Some(ends)) if ends <= cutoff => "the activation has ended",
        _ => "deactivated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Subject;
    use time::macros::datetime;

    const CUTOFF: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn pair(kind: EventKind, ends: Option<OffsetDateTime>, confirmed: Option<bool>) -> PendingPair {
        PendingPair {
            subject: Subject {
                application: "a".into(),
                principal_id: "u".into(),
                group_id: "g".into(),
                user_attributes: None,
                group_attributes: None,
            },
            latest_event_id: 1,
            latest_kind: kind,
            latest_ends_at: ends,
            confirmed_present: confirmed,
            job_ids: vec![1],
        }
    }

    #[test]
    fn a_running_activation_is_added_unless_already_confirmed() {
        let later = Some(datetime!(2026-11-28 13:00 UTC));
        assert_eq!(
            step(&pair(EventKind::Activation, later, None), CUTOFF),
            Step::Apply(Action::Add)
        );
        assert_eq!(
            step(&pair(EventKind::Activation, None, Some(false)), CUTOFF),
            Step::Apply(Action::Add)
        );
        assert_eq!(
            step(&pair(EventKind::Activation, later, Some(true)), CUTOFF),
            Step::Skip { present: true }
        );
    }

    #[test]
    fn an_ended_activation_or_a_deactivation_is_removed() {
        let ended = pair(EventKind::Activation, Some(CUTOFF), Some(true));
        assert_eq!(step(&ended, CUTOFF), Step::Apply(Action::Remove));
        assert_eq!(removal_reason(&ended, CUTOFF), "the activation has ended");
        let deactivated = pair(EventKind::Deactivation, None, None);
        assert_eq!(step(&deactivated, CUTOFF), Step::Apply(Action::Remove));
        assert_eq!(removal_reason(&deactivated, CUTOFF), "deactivated");
        assert_eq!(
            step(&pair(EventKind::Deactivation, None, Some(false)), CUTOFF),
            Step::Skip { present: false }
        );
    }
}
