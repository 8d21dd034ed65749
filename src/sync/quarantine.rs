//! When a cycle puts its application in quarantine or takes it out (docs/correctness.md).
//!
//! Credentials AWS refuses quarantine at once. So do changes that overwhelmingly fail for good
//! (at least five tried, none applied, nine in ten failed): that is a broken configuration, not a
//! passing outage. Transient failures (throttling, 5xx, timeouts) do not quarantine: their jobs
//! wait for the next regular cycle. In quarantine, any applied change ends it; a cycle with
//! nothing to do probes the endpoint instead.

use super::CycleReport;

/// Fewest changes tried in one cycle before their failure rate can quarantine an application.
const MIN_CHANGES_FOR_RATE: i32 = 5;

/// What follows a cycle for the application's quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Quarantine it (again), with this reason.
    Enter(String),
    /// It works again: end the quarantine.
    Clear,
    /// In quarantine with nothing sent: test the connection to decide.
    Probe,
    /// Nothing changes.
    Keep,
}

/// Judges a finished cycle of an application that was (or was not) quarantined when it started.
pub fn verdict(report: &CycleReport, quarantined: bool) -> Verdict {
    if report.outcome == super::CycleOutcome::Interrupted {
        return Verdict::Keep;
    }
    if let Some(reason) = &report.auth_failure {
        return Verdict::Enter(format!("AWS refused the credentials: {reason}"));
    }
    let c = &report.counts;
    let tried = c.applied + c.failed + c.retrying;
    if tried >= MIN_CHANGES_FOR_RATE && c.applied == 0 && c.failed * 10 >= tried * 9 {
        return Verdict::Enter(format!(
            "{} of {tried} changes failed for good in cycle {}",
            c.failed, report.id
        ));
    }
    match (quarantined, c.applied > 0, tried > 0) {
        (false, _, _) => Verdict::Keep,
        (true, true, _) => Verdict::Clear,
        (true, false, false) => Verdict::Probe,
        (true, false, true) => Verdict::Enter(format!(
            "no change succeeded in cycle {} while quarantined",
            report.id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cycles::CycleCounts;

    fn report(applied: i32, failed: i32, retrying: i32, auth: bool) -> CycleReport {
        CycleReport {
            id: 7,
            outcome: crate::sync::CycleOutcome::Partial,
            counts: CycleCounts {
                planned: applied + failed + retrying,
                applied,
                skipped: 0,
                failed,
                retrying,
            },
            auth_failure: auth.then(|| "401 Unauthorized".to_owned()),
            duration_secs: 0.1,
        }
    }

    #[test]
    fn refused_credentials_quarantine_at_once() {
        assert!(
            matches!(verdict(&report(3, 0, 1, true), false), Verdict::Enter(r) if r.contains("credentials"))
        );
    }

    #[test]
    fn overwhelming_permanent_failures_quarantine_but_outages_do_not() {
        assert!(matches!(
            verdict(&report(0, 9, 1, false), false),
            Verdict::Enter(_)
        ));
        assert_eq!(
            verdict(&report(0, 4, 0, false), false),
            Verdict::Keep,
            "too few to judge"
        );
        assert_eq!(
            verdict(&report(1, 20, 0, false), false),
            Verdict::Keep,
            "one applied"
        );
        assert_eq!(
            verdict(&report(0, 0, 50, false), false),
            Verdict::Keep,
            "an outage"
        );
    }

    #[test]
    fn in_quarantine_a_success_clears_and_idleness_probes() {
        assert_eq!(verdict(&report(1, 3, 0, false), true), Verdict::Clear);
        assert_eq!(verdict(&report(0, 0, 0, false), true), Verdict::Probe);
        assert!(matches!(
            verdict(&report(0, 0, 2, false), true),
            Verdict::Enter(_)
        ));
    }
}
