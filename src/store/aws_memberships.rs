//! What pimbridge knows of each membership in AWS, and the per-pair lock every sender holds.
//!
//! Exactly one request for a (user, group) of an application is in flight at a time: whoever sends
//! one (the dispatcher, a cycle, an operator) holds the pair's session advisory lock from reading
//! the pair's state until the outcome is recorded, so no two requests race in AWS. Before a request
//! goes out the record says `unknown` (the dispatcher's claim writes it; cycles and operators write
//! it themselves), so a crash or a lost reply leaves `unknown`, never a stale `present`/`absent`.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::StoreError;

/// First half of the pair lock keys ("pair"); the second is a hash of application, group, user.
const PAIR_LOCK_CLASS: i32 = 0x7061_6972;

/// What AWS holds for a pair, as far as pimbridge knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsState {
    Present,
    Absent,
    /// A request's outcome was not confirmed, or pimbridge never looked.
    Unknown,
}

impl AwsState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Absent => "absent",
            Self::Unknown => "unknown",
        }
    }

    fn parse(text: Option<&str>) -> Self {
        match text {
            Some("present") => Self::Present,
            Some("absent") => Self::Absent,
            _ => Self::Unknown,
        }
    }

    /// The known state for a member / non-member.
    pub fn known(present: bool) -> Self {
        if present {
            Self::Present
        } else {
            Self::Absent
        }
    }
}

/// Who put a membership in AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// pimbridge added it while AWS did not hold it: pimbridge may remove it.
    Owned,
    /// AWS held it before pimbridge's first add: pimbridge never removes it.
    Standing,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owned => "owned",
            Self::Standing => "standing",
        }
    }

    fn parse(text: Option<&str>) -> Option<Self> {
        match text {
            Some("owned") => Some(Self::Owned),
            Some("standing") => Some(Self::Standing),
            _ => None,
        }
    }
}

/// A (user, group) of one application.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pair {
    pub principal_id: String,
    pub group_id: String,
}

/// One pair's desired state (from its grants, now) and pimbridge's record of AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairView {
    pub pair: Pair,
    /// At least one grant is active now.
    pub desired: bool,
    /// The active grant that ends last (for the log), else the one that ended last.
    pub grant_id: Option<i64>,
    /// That grant was ended by a deactivation (rather than reaching its end).
    pub deactivated: bool,
    pub aws: AwsState,
    pub provenance: Option<Provenance>,
}

fn columns(pairs: &[Pair]) -> (Vec<&str>, Vec<&str>) {
    pairs
        .iter()
        .map(|p| (p.principal_id.as_str(), p.group_id.as_str()))
        .unzip()
}

/// The statement of [`lock_with`], prepared once per connection: a caller sends the lock and the
/// statements that read under it together, so it must be prepared first to leave first.
pub async fn lock_statement(
    client: &impl GenericClient,
) -> Result<tokio_postgres::Statement, StoreError> {
    Ok(client.prepare_cached(&keys_sql("pg_advisory_lock")).await?)
}

/// Takes the pairs' locks on this connection, in a fixed order (so two holders of several locks
/// cannot deadlock), waiting for a request in flight to be recorded. Release with [`unlock`]; a
/// connection that dies releases them by itself.
pub async fn lock_with(
    client: &impl GenericClient,
    statement: &tokio_postgres::Statement,
    application: &str,
    pairs: &[Pair],
) -> Result<(), StoreError> {
    let (users, groups) = columns(pairs);
    client
        .query(
            statement,
            &[&PAIR_LOCK_CLASS, &application, &users, &groups],
        )
        .await?;
    Ok(())
}

/// Releases the locks [`lock_with`] took on this connection.
pub async fn unlock(
    client: &impl GenericClient,
    application: &str,
    pairs: &[Pair],
) -> Result<(), StoreError> {
    let (users, groups) = columns(pairs);
    client
        .query(
            &client
                .prepare_cached(&keys_sql("pg_advisory_unlock"))
                .await?,
            &[&PAIR_LOCK_CLASS, &application, &users, &groups],
        )
        .await?;
    Ok(())
}

/// Calls `function` (`pg_advisory_lock` or `pg_advisory_unlock`) on each pair's lock key, in key
/// order.
fn keys_sql(function: &'static str) -> String {
    format!(
        "SELECT {function}($1, k) FROM (
             SELECT DISTINCT hashtext($2 || chr(31) || g || chr(31) || u) AS k
             FROM unnest($3::text[], $4::text[]) AS p(u, g) ORDER BY k
         ) keys"
    )
}

/// Reads each pair's desired state and record, in the order given.
pub async fn view(
    client: &impl GenericClient,
    application: &str,
    pairs: &[Pair],
) -> Result<Vec<PairView>, StoreError> {
    let (users, groups) = columns(pairs);
    let rows = client
        .query(
            &client.prepare_cached(VIEW_SQL).await?,
            &[&application, &users, &groups],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PairView {
            pair: Pair {
                principal_id: r.get(0),
                group_id: r.get(1),
            },
            desired: r.get::<_, Option<bool>>(2).unwrap_or(false),
            grant_id: r.get(3),
            deactivated: r.get::<_, Option<bool>>(6).unwrap_or(false),
            aws: AwsState::parse(r.get(4)),
            provenance: Provenance::parse(r.get(5)),
        })
        .collect())
}

const VIEW_SQL: &str =
    "SELECT p.u, p.g, gr.active, gr.id, m.aws_state, m.provenance, gr.deactivated
             FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS p(u, g, n)
             LEFT JOIN aws_memberships m
                    ON m.application = $1 AND m.principal_id = p.u AND m.group_id = p.g
             LEFT JOIN LATERAL (
                 SELECT g.effective_end > clock_timestamp() AS active, g.id,
                        g.ended_at IS NOT NULL AND g.ended_at < g.ends_at AS deactivated
                 FROM grants g
                 WHERE g.application = $1 AND g.principal_id = p.u AND g.group_id = p.g
                 ORDER BY g.effective_end DESC LIMIT 1
             ) gr ON true
             ORDER BY p.n";

/// Records that requests for these pairs are about to go out (`unknown`), and that pimbridge
/// owns those whose first add it is about to send. Commit before sending.
pub async fn mark_in_flight(
    client: &impl GenericClient,
    application: &str,
    pairs: &[Pair],
    owned: &[bool],
) -> Result<(), StoreError> {
    let (users, groups) = columns(pairs);
    client
        .execute(
            &client.prepare_cached(MARK_IN_FLIGHT_SQL).await?,
            &[&application, &users, &groups, &owned],
        )
        .await?;
    Ok(())
}

const MARK_IN_FLIGHT_SQL: &str =
    "INSERT INTO aws_memberships (application, principal_id, group_id, aws_state, provenance)
             SELECT $1, u, g, 'unknown', CASE WHEN o THEN 'owned' END
             FROM unnest($2::text[], $3::text[], $4::bool[]) AS p(u, g, o)
             ON CONFLICT (application, principal_id, group_id) DO UPDATE
             SET aws_state = 'unknown', updated_at = clock_timestamp(),
                 provenance = coalesce(aws_memberships.provenance, EXCLUDED.provenance)";

/// What a reconciliation learnt of one pair in AWS.
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    pub pair: &'a Pair,
    pub state: AwsState,
    /// Who put the membership there, when that became known.
    pub provenance: Option<Provenance>,
    /// AWS was asked (or answered a change), rather than the state inferred.
    pub verified: bool,
}

/// The arguments of [`SETTLE_SQL`]: what AWS now holds for each pair (and who put it there, when
/// that became known). A pair is left `unknown` while an immediate job of it other than `own_job`
/// is claimed: its request may land after this one. A pair given twice ends as if settled twice in
/// order: the last state, the last provenance given, verified if either was.
pub(crate) struct SettleColumns<'a> {
    application: &'a str,
    users: Vec<&'a str>,
    groups: Vec<&'a str>,
    states: Vec<&'static str>,
    provenances: Vec<Option<&'static str>>,
    verified: Vec<bool>,
    own_job: Option<i64>,
}

impl<'a> SettleColumns<'a> {
    pub(crate) fn of(
        application: &'a str,
        settlements: &[Settlement<'a>],
        own_job: Option<i64>,
    ) -> Self {
        // One row per pair: an upsert may not touch a row twice in one statement.
        let mut merged: Vec<Settlement<'a>> = Vec::with_capacity(settlements.len());
        let mut at: std::collections::HashMap<&Pair, usize> = std::collections::HashMap::new();
        for s in settlements {
            match at.get(s.pair) {
                Some(&i) => {
                    let earlier = merged[i];
                    merged[i] = Settlement {
                        provenance: s.provenance.or(earlier.provenance),
                        verified: s.verified || earlier.verified,
                        ..*s
                    };
                }
                None => {
                    at.insert(s.pair, merged.len());
                    merged.push(*s);
                }
            }
        }
        Self {
            application,
            users: merged
                .iter()
                .map(|s| s.pair.principal_id.as_str())
                .collect(),
            groups: merged.iter().map(|s| s.pair.group_id.as_str()).collect(),
            states: merged.iter().map(|s| s.state.as_str()).collect(),
            provenances: merged
                .iter()
                .map(|s| s.provenance.map(Provenance::as_str))
                .collect(),
            verified: merged.iter().map(|s| s.verified).collect(),
            own_job,
        }
    }

    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.application,
            &self.users,
            &self.groups,
            &self.states,
            &self.provenances,
            &self.verified,
            &self.own_job,
        ]
    }
}

/// Settles the pairs (none: nothing) from $1–$7 (see [`SettleColumns`]).
pub(crate) const SETTLE_SQL: &str =
    "INSERT INTO aws_memberships AS m (application, principal_id, group_id, aws_state,
                                               provenance, verified_at)
             SELECT $1, u, g, st, pr, CASE WHEN v THEN clock_timestamp() END
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bool[])
                  AS p(u, g, st, pr, v)
             ON CONFLICT (application, principal_id, group_id) DO UPDATE
             SET aws_state = CASE WHEN EXISTS (
                     SELECT 1 FROM jobs j JOIN events e ON e.id = j.event_id
                     WHERE j.application = $1 AND j.lane = 'immediate' AND j.state = 'running'
                       AND e.principal_id = EXCLUDED.principal_id
                       AND e.group_id = EXCLUDED.group_id
                       AND j.id IS DISTINCT FROM $7) THEN 'unknown' ELSE EXCLUDED.aws_state END,
                 provenance = coalesce(EXCLUDED.provenance, m.provenance),
                 verified_at = coalesce(EXCLUDED.verified_at, m.verified_at),
                 updated_at = clock_timestamp()";

/// The statements every reconciliation of a pair runs (see `store::warm`).
pub(crate) fn hot_statements() -> Vec<String> {
    vec![
        keys_sql("pg_advisory_lock"),
        keys_sql("pg_advisory_unlock"),
        VIEW_SQL.to_owned(),
        MARK_IN_FLIGHT_SQL.to_owned(),
    ]
}

/// How many memberships a cycle of `application` would remove now: those pimbridge owns, that
/// AWS may still hold, and that have no active grant. An upper bound (a drift check may find some
/// already gone); standing members are never counted, as they are never removed.
pub async fn removals_due(
    client: &impl GenericClient,
    application: &str,
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM aws_memberships m
             WHERE m.application = $1 AND m.aws_state <> 'absent' AND m.provenance = 'owned'
               AND NOT EXISTS (
                   SELECT 1 FROM grants g
                   WHERE g.application = $1 AND g.principal_id = m.principal_id
                     AND g.group_id = m.group_id AND g.effective_end > clock_timestamp())",
            &[&application],
        )
        .await?;
    Ok(row.get(0))
}
