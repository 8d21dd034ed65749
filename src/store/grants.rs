//! Grants: what each activation gives, and what deactivations take back (docs/correctness.md).
//!
//! A user should be a member of a group in an application iff at least one of the pair's grants
//! is active (its effective end, the earlier of its end and the deactivation that ended it, lies
//! ahead). Grants are written in the intake transaction, under the application's row lock, so an
//! activation and a deactivation of the same pair never race.

use std::collections::HashMap;

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

/// Records activations: each a new grant, or an extension of the grant with the same key. A new
/// grant that a deactivation already stored ends (delivered out of order) starts ended. An
/// extension that happened after the grant's end starts it again; one older than the newest
/// activation of the grant changes nothing.
///
/// One statement for all of `activations`, so they must not depend on each other: no two share a
/// grant key or a pair, nor touch the grant of another's pair (the caller sorts that out; see
/// `intake::batch`); otherwise the statement fails or the outcome depends on the order. `unseen`
/// are events already stored in this transaction that the activations must not see yet (those
/// that come after them in the request, for one recorded on its own).
pub async fn record_activations(
    client: &impl GenericClient,
    activations: &[Activation<'_>],
    unseen: &[i64],
) -> Result<(), StoreError> {
    if activations.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO grants AS g (application, source, grant_key, principal_id, group_id,
                                  started_at, activated_at, ends_at, event_id, note,
                                  ended_at, ended_by)
         SELECT a.application, a.source, a.grant_key, a.principal_id, a.group_id,
                a.occurred_at, a.occurred_at, a.ends_at, a.event_id, a.note,
                ended.occurred_at, ended.id
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::timestamptz[], $8::int8[], $9::text[])
              WITH ORDINALITY
              AS a(application, source, grant_key, principal_id, group_id, occurred_at, ends_at,
                   event_id, note, ord)
         LEFT JOIN LATERAL (
             SELECT e.id, e.occurred_at FROM events e
             JOIN jobs j ON j.event_id = e.id AND j.application = a.application
             WHERE e.principal_id = a.principal_id AND e.group_id = a.group_id
               AND e.kind = 'deactivation' AND {FAMILY_SQL} = a.source
               AND (e.grant_id = a.grant_key OR (e.grant_id IS NULL AND e.occurred_at > a.occurred_at))
               AND e.id <> ALL($10::int8[])
             ORDER BY e.occurred_at LIMIT 1
         ) ended ON true
         ORDER BY a.ord
         ON CONFLICT (application, source, grant_key) DO UPDATE
         SET ends_at = EXCLUDED.ends_at, activated_at = EXCLUDED.activated_at,
             event_id = EXCLUDED.event_id, note = EXCLUDED.note,
             ended_at = CASE WHEN g.ended_at <= EXCLUDED.activated_at THEN NULL ELSE g.ended_at END,
             ended_by = CASE WHEN g.ended_at <= EXCLUDED.activated_at THEN NULL ELSE g.ended_by END
         WHERE g.activated_at <= EXCLUDED.activated_at"
    );
    let applications: Vec<&str> = activations.iter().map(|a| a.application).collect();
    let sources: Vec<&str> = activations.iter().map(|a| a.source).collect();
    let keys: Vec<&str> = activations.iter().map(|a| a.grant_key).collect();
    let principals: Vec<&str> = activations.iter().map(|a| a.principal_id).collect();
    let groups: Vec<&str> = activations.iter().map(|a| a.group_id).collect();
    let occurred: Vec<OffsetDateTime> = activations.iter().map(|a| a.occurred_at).collect();
    let ends: Vec<OffsetDateTime> = activations.iter().map(|a| a.ends_at).collect();
    let events: Vec<i64> = activations.iter().map(|a| a.event_id).collect();
    let notes: Vec<Option<&str>> = activations.iter().map(|a| a.note).collect();
    client
        .execute(
            &client.prepare_cached(&sql).await?,
            &[
                &applications,
                &sources,
                &keys,
                &principals,
                &groups,
                &occurred,
                &ends,
                &events,
                &notes,
                &unseen,
            ],
        )
        .await?;
    Ok(())
}

/// The pair (principal, group) of each existing grant of `application` and `source` among
/// `keys`: an activation that extends a grant touches that grant's pair, whatever its own.
pub async fn pairs_of(
    client: &impl GenericClient,
    application: &str,
    source: &str,
    keys: &[&str],
) -> Result<HashMap<String, (String, String)>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = client
        .query(
            // A look-up per key by the grant's unique key, never a scan of the application's
            // grants filtered by the keys (as a plan made on stale statistics did).
            "SELECT k.key, g.principal_id, g.group_id
             FROM unnest($3::text[]) AS k(key)
             CROSS JOIN LATERAL (SELECT principal_id, group_id FROM grants
                                 WHERE application = $1 AND source = $2 AND grant_key = k.key
                                 LIMIT 1) g",
            &[&application, &source, &keys],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
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

/// Ends the grants the deactivations name, in one statement. No two may share a pair (a grant
/// would then be ended by either, at the server's choice). Returns how many grants it ended.
pub async fn record_deactivations(
    client: &impl GenericClient,
    deactivations: &[Deactivation<'_>],
) -> Result<u64, StoreError> {
    if deactivations.is_empty() {
        return Ok(0);
    }
    let applications: Vec<&str> = deactivations.iter().map(|d| d.application).collect();
    let sources: Vec<&str> = deactivations.iter().map(|d| d.source).collect();
    let keys: Vec<Option<&str>> = deactivations.iter().map(|d| d.grant_key).collect();
    let principals: Vec<&str> = deactivations.iter().map(|d| d.principal_id).collect();
    let groups: Vec<&str> = deactivations.iter().map(|d| d.group_id).collect();
    let occurred: Vec<OffsetDateTime> = deactivations.iter().map(|d| d.occurred_at).collect();
    let events: Vec<i64> = deactivations.iter().map(|d| d.event_id).collect();
    Ok(client
        .execute(
            // A deactivation takes effect when it arrives at the latest, even if the sender's
            // clock runs ahead.
            &client
                .prepare_cached(
                    "UPDATE grants g SET ended_at = least(d.occurred_at, clock_timestamp()),
                                 ended_by = d.event_id
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::timestamptz[], $7::int8[])
                  AS d(application, source, grant_key, principal_id, group_id, occurred_at,
                       event_id)
             WHERE g.application = d.application AND g.source = d.source
               AND g.principal_id = d.principal_id AND g.group_id = d.group_id
               AND (CASE WHEN d.grant_key IS NULL THEN g.started_at < d.occurred_at
                         ELSE g.grant_key = d.grant_key END)
               AND (g.ended_at IS NULL OR g.ended_at > d.occurred_at)",
                )
                .await?,
            &[
                &applications,
                &sources,
                &keys,
                &principals,
                &groups,
                &occurred,
                &events,
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
