//! A reconciliation's outcome, recorded by one statement: the AWS ids it learnt, its
//! provisioning-log entries, the record of AWS for its pairs and, for an immediate job, the job's
//! end.
//!
//! One statement, not a transaction of four: it commits as one all the same (a statement is its
//! own transaction), and Postgres starts, checks and commits one statement instead of six
//! (`BEGIN`, four, `COMMIT`). Most of an immediate activation's database time goes to such
//! per-statement work rather than to the rows written (docs/performance.md). Each part is a
//! data-modifying `WITH` step, which Postgres runs exactly once whether or not it is read; they
//! touch a table each and all see the same snapshot.

use std::sync::OnceLock;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::aws_memberships::{self, SettleColumns, Settlement};
use super::jobs::{self, EndColumns, JobEnd};
use super::provisioning_log::{self, Entry, EntryColumns};
use super::scim_ids::{self, IdColumns, NewId};
use super::StoreError;

/// What a reconciliation learnt and did.
pub struct Outcomes<'a> {
    pub application: &'a str,
    /// AWS ids learnt on the way; each (application, kind, Entra id) at most once.
    pub ids: &'a [NewId<'a>],
    /// Log entries, in order.
    pub entries: &'a [Entry<'a>],
    /// What AWS now holds for the pairs.
    pub settlements: &'a [Settlement<'a>],
    /// The immediate job reconciled (its id and lease owner), if any: its pairs' records are
    /// settled even while it is claimed.
    pub own_job: Option<(i64, &'a str)>,
    /// How the job ends; `None` leaves it as it is (a failure: its caller decides what next).
    pub job_end: Option<JobEnd>,
    /// The note of a superseded job.
    pub note: &'a str,
}

/// The prepared statement of [`record`]. Prepare it before sending `record` together with other
/// statements: a statement prepared on the way would let those leave first.
pub async fn statement(
    client: &impl GenericClient,
) -> Result<tokio_postgres::Statement, StoreError> {
    Ok(client.prepare_cached(record_sql()).await?)
}

/// Records `outcomes` with [`statement`]; the query leaves on the first poll. Returns, when the
/// job was ended as done, the seconds from its event's receipt to now by the database clock;
/// `None` otherwise (or when its lease was lost meanwhile).
pub async fn record(
    client: &impl GenericClient,
    statement: &tokio_postgres::Statement,
    outcomes: &Outcomes<'_>,
) -> Result<Option<f64>, StoreError> {
    let ids = IdColumns::of(outcomes.ids);
    let entries = EntryColumns::of(outcomes.entries);
    let settled = SettleColumns::of(
        outcomes.application,
        outcomes.settlements,
        outcomes.own_job.map(|(id, _)| id),
    );
    let ended = EndColumns::of(
        outcomes
            .own_job
            .zip(outcomes.job_end)
            .map(|((id, owner), end)| (id, owner, end)),
        outcomes.note,
    );
    let params: Vec<&(dyn ToSql + Sync)> = ids
        .params()
        .into_iter()
        .chain(entries.params())
        .chain(settled.params())
        .chain(ended.params())
        .collect();
    let row = client.query_one(statement, &params).await?;
    let latency: Option<f64> = row.get(0);
    Ok(latency.filter(|_| outcomes.job_end == Some(JobEnd::Done)))
}

/// The four statements of the store modules, their parameters renumbered one after the other.
fn record_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let parts = [
            ("ids", scim_ids::PUT_MANY_SQL),
            ("logged", provisioning_log::APPEND_MANY_SQL),
            ("settled", aws_memberships::SETTLE_SQL),
            ("ended", jobs::END_SQL),
        ];
        let mut before = 0;
        let steps: Vec<String> = parts
            .iter()
            .map(|(name, sql)| {
                let step = format!("{name} AS ({})", super::shift_params(sql, before));
                before += super::last_param(sql);
                step
            })
            .collect();
        format!(
            "WITH {} SELECT (SELECT * FROM ended) AS latency",
            steps.join(", ")
        )
    })
}

/// The statement of every reconciliation's outcome (see `store::warm`).
pub(crate) fn hot_statements() -> Vec<String> {
    vec![record_sql().to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_take_their_parameters_one_after_the_other() {
        // As many as the four parts' argument arrays, in the order `record` passes them.
        assert_eq!(super::super::last_param(record_sql()), 5 + 12 + 7 + 4);
        assert!(
            record_sql().contains("$6::text[], $7::int8[]"),
            "the log's first two columns"
        );
        assert!(record_sql().contains("WHERE j.id = $25::int8 AND j.lease_owner = $26::text"));
    }
}
