//! Grants: what each activation gives, and what deactivations take back (docs/correctness.md).
//!
//! A user should be a member of a group in an application iff at least one of the pair's grants
//! is active (its effective end, the earlier of its end and the deactivation that ended it, lies
//! ahead). Grants are written in the intake transaction, under the application's row lock, so an
//! activation and a deactivation of the same pair never race.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;

/// The source family a grant belongs to. Audit records are one source however they arrive
/// (`/webhooks/audit` or Event Grid), so that a deactivation ends what the activation started.
pub fn source_family(source: &str) -> &str {
    match source {
        "eventgrid" => "audit",
        other => other,
    }
}

/// SQL for [`source_family`] over `events.source`.
const FAMILY_SQL: &str = "(CASE WHEN e.source = 'eventgrid' THEN 'audit' ELSE e.source END)";

/// An activation to record as a grant (or as a new end for an existing one).
#[derive(Debug, Clone)]
pub struct Activation<'a> {
    pub application: &'a str,
    pub source: &'a str,
    pub grant_key: &'a str,
    pub principal_id: &'a str,
    pub group_id: &'a str,
    pub occurred_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub event_id: i64,
    /// Why the end differs from the one requested, if it does.
    pub note: Option<&'a str>,
}

/// Records an activation: a new grant, or an extension of the grant with the same key. A new
/// grant that a deactivation already stored ends (delivered out of order) starts ended. An
/// extension that happened after the grant's end starts it again; one older than the newest
/// activation of the grant changes nothing. Returns the grant's id.
pub async fn record_activation(
    client: &impl GenericClient,
    a: &Activation<'_>,
) -> Result<i64, StoreError> {
    let sql = format!(
        "WITH ended AS (
             SELECT e.id, e.occurred_at FROM events e
             JOIN jobs j ON j.event_id = e.id AND j.application = $1
             WHERE e.principal_id = $4 AND e.group_id = $5 AND e.kind = 'deactivation'
               AND {FAMILY_SQL} = $2
               AND (e.grant_id = $3 OR (e.grant_id IS NULL AND e.occurred_at > $6))
             ORDER BY e.occurred_at LIMIT 1
         )
         INSERT INTO grants AS g (application, source, grant_key, principal_id, group_id,
                                  started_at, activated_at, ends_at, event_id, note,
                                  ended_at, ended_by)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9,
                 (SELECT occurred_at FROM ended), (SELECT id FROM ended))
         ON CONFLICT (application, source, grant_key) DO UPDATE
         SET ends_at = EXCLUDED.ends_at, activated_at = EXCLUDED.activated_at,
             event_id = EXCLUDED.event_id, note = EXCLUDED.note,
             ended_at = CASE WHEN g.ended_at <= EXCLUDED.activated_at THEN NULL ELSE g.ended_at END,
             ended_by = CASE WHEN g.ended_at <= EXCLUDED.activated_at THEN NULL ELSE g.ended_by END
         WHERE g.activated_at <= EXCLUDED.activated_at
         RETURNING id"
    );
    let row = client
        .query_opt(
            &sql,
            &[
                &a.application,
                &a.source,
                &a.grant_key,
                &a.principal_id,
                &a.group_id,
                &a.occurred_at,
                &a.ends_at,
                &a.event_id,
                &a.note,
            ],
        )
        .await?;
    match row {
        Some(row) => Ok(row.get(0)),
        // An extension older than the grant's newest activation: the grant stays as it is.
        None => {
            let row = client
                .query_one(
                    "SELECT id FROM grants WHERE application = $1 AND source = $2 AND grant_key = $3",
                    &[&a.application, &a.source, &a.grant_key],
                )
                .await?;
            Ok(row.get(0))
        }
    }
}

/// A deactivation to apply to grants.
#[derive(Debug, Clone)]
pub struct Deactivation<'a> {
    pub application: &'a str,
    pub source: &'a str,
    /// The grant it names; `None` ends every grant of the pair from the same source that started
    /// before it.
    pub grant_key: Option<&'a str>,
    pub principal_id: &'a str,
    pub group_id: &'a str,
    pub occurred_at: OffsetDateTime,
    pub event_id: i64,
}

/// Ends the grants a deactivation names. Returns how many it ended.
pub async fn record_deactivation(
    client: &impl GenericClient,
    d: &Deactivation<'_>,
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            // A deactivation takes effect when it arrives at the latest, even if the sender's
            // clock runs ahead.
            "UPDATE grants SET ended_at = least($6, clock_timestamp()), ended_by = $7
             WHERE application = $1 AND source = $2 AND principal_id = $4 AND group_id = $5
               AND (CASE WHEN $3::text IS NULL THEN started_at < $6 ELSE grant_key = $3 END)
               AND (ended_at IS NULL OR ended_at > $6)",
            &[
                &d.application,
                &d.source,
                &d.grant_key,
                &d.principal_id,
                &d.group_id,
                &d.occurred_at,
                &d.event_id,
            ],
        )
        .await?)
}

/// An operator's grant (on-demand provisioning): active from now until `ends_at`, or until an
/// operator removes it when `None`.
pub async fn record_operator_grant(
    client: &impl GenericClient,
    application: &str,
    principal_id: &str,
    group_id: &str,
    ends_at: Option<OffsetDateTime>,
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO grants AS g (application, source, grant_key, principal_id, group_id,
                                      started_at, activated_at, ends_at, note)
             VALUES ($1, 'operator', $2 || '/' || $3, $2, $3, clock_timestamp(),
                     clock_timestamp(), coalesce($4::timestamptz, 'infinity'::timestamptz), 'provisioned on demand by an operator')
             ON CONFLICT (application, source, grant_key) DO UPDATE
             SET ends_at = EXCLUDED.ends_at, activated_at = EXCLUDED.activated_at,
                 ended_at = NULL, ended_by = NULL
             RETURNING id",
            &[&application, &principal_id, &group_id, &ends_at],
        )
        .await?;
    Ok(row.get(0))
}

/// Ends an operator's grant of a pair now (a removal on demand). Grants from Entra are not
/// touched: a user whose PIM activation still runs stays a member.
pub async fn end_operator_grant(
    client: &impl GenericClient,
    application: &str,
    principal_id: &str,
    group_id: &str,
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "UPDATE grants SET ended_at = clock_timestamp()
             WHERE application = $1 AND source = 'operator' AND grant_key = $2 || '/' || $3
               AND effective_end > clock_timestamp()",
            &[&application, &principal_id, &group_id],
        )
        .await?)
}
