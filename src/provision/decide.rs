//! What one pair needs, as a pure function of its desired state and pimbridge's record of AWS.
//!
//! Adds and removals are idempotent in AWS, so whenever the record is `unknown` the change is sent;
//! only a known record that already matches is skipped. Only memberships pimbridge owns are ever
//! removed.

use crate::store::aws_memberships::{AwsState, PairView, Provenance};

/// The step a reconciliation takes for one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Add the member. `first` when pimbridge never added it: AWS is asked first whether it is
    /// already a member (then it is standing and never removed by pimbridge).
    Add { first: bool },
    /// Remove the member (pimbridge owns it and AWS may hold it).
    Remove,
    /// Nothing to send, for this reason.
    Skip(&'static str),
}

/// Why a removal is not sent when pimbridge does not own the membership.
pub const NOT_OWNED_STANDING: &str =
    "standing member: AWS held it before pimbridge's first add, so pimbridge never removes it";
/// Why a removal is not sent for a membership pimbridge never added.
pub const NOT_OWNED_NEVER_ADDED: &str = "pimbridge never added this membership";
/// Why an add is not sent.
pub const ALREADY_PRESENT: &str = "AWS already holds the membership (as last confirmed)";
/// Why a removal is not sent.
pub const ALREADY_ABSENT: &str = "AWS no longer holds the membership (as last confirmed)";

/// Decides the step for a pair.
pub fn decide(view: &PairView) -> Step {
    match (view.desired, view.aws, view.provenance) {
        (true, AwsState::Present, _) => Step::Skip(ALREADY_PRESENT),
        (true, _, provenance) => Step::Add {
            first: provenance.is_none(),
        },
        (false, _, None) => Step::Skip(NOT_OWNED_NEVER_ADDED),
        (false, _, Some(Provenance::Standing)) => Step::Skip(NOT_OWNED_STANDING),
        (false, AwsState::Absent, Some(Provenance::Owned)) => Step::Skip(ALREADY_ABSENT),
        (false, _, Some(Provenance::Owned)) => Step::Remove,
    }
}

/// Whether looking in AWS first can change what is sent for an owned pair (the drift check).
/// A removal is sent whatever AWS holds (removing an absent member is a no-op there), so a pair
/// whose grant ended and whose record is not `absent` is not looked up: a cycle of many
/// deactivations sends its PATCHes without listing the group first.
pub fn worth_checking(view: &PairView) -> bool {
    view.provenance == Some(Provenance::Owned) && (view.desired || view.aws == AwsState::Absent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::aws_memberships::Pair;

    fn view(desired: bool, aws: AwsState, provenance: Option<Provenance>) -> PairView {
        PairView {
            pair: Pair {
                principal_id: "u".into(),
                group_id: "g".into(),
            },
            desired,
            grant_id: None,
            deactivated: false,
            aws,
            provenance,
        }
    }

    #[test]
    fn an_unknown_record_is_never_trusted() {
        use AwsState::*;
        let owned = Some(Provenance::Owned);
        assert_eq!(
            decide(&view(true, Unknown, owned)),
            Step::Add { first: false }
        );
        assert_eq!(decide(&view(false, Unknown, owned)), Step::Remove);
        assert_eq!(
            decide(&view(true, Unknown, None)),
            Step::Add { first: true }
        );
    }

    #[test]
    fn only_owned_memberships_are_removed() {
        use AwsState::*;
        for aws in [Present, Unknown] {
            assert_eq!(
                decide(&view(false, aws, None)),
                Step::Skip(NOT_OWNED_NEVER_ADDED)
            );
            assert_eq!(
                decide(&view(false, aws, Some(Provenance::Standing))),
                Step::Skip(NOT_OWNED_STANDING)
            );
            assert_eq!(
                decide(&view(false, aws, Some(Provenance::Owned))),
                Step::Remove
            );
        }
    }

    #[test]
    fn only_pairs_whose_step_aws_can_change_are_checked() {
        use AwsState::*;
        let owned = Some(Provenance::Owned);
        for aws in [Present, Absent, Unknown] {
            // Desired: a missing member is added again, a lingering one is not added twice.
            assert!(worth_checking(&view(true, aws, owned)));
            // Not owned: never removed, so nothing AWS says matters.
            assert!(!worth_checking(&view(true, aws, None)));
            assert!(!worth_checking(&view(
                false,
                aws,
                Some(Provenance::Standing)
            )));
        }
        // Ended and recorded absent: one found in AWS again is removed again.
        assert!(worth_checking(&view(false, Absent, owned)));
        // Ended and maybe present: removed either way.
        assert!(!worth_checking(&view(false, Present, owned)));
        assert!(!worth_checking(&view(false, Unknown, owned)));
    }

    #[test]
    fn a_known_matching_record_costs_no_request() {
        use AwsState::*;
        let owned = Some(Provenance::Owned);
        assert_eq!(
            decide(&view(true, Present, owned)),
            Step::Skip(ALREADY_PRESENT)
        );
        assert_eq!(
            decide(&view(false, Absent, owned)),
            Step::Skip(ALREADY_ABSENT)
        );
        assert_eq!(
            decide(&view(true, Absent, owned)),
            Step::Add { first: false }
        );
        assert_eq!(
            decide(&view(true, Present, Some(Provenance::Standing))),
            Step::Skip(ALREADY_PRESENT)
        );
    }
}
