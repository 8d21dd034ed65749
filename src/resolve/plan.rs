//! What a resolved Graph notification means, as a pure function: compare the PIM assignment
//! instances Graph says are active in a group with the Graph-sourced events pimbridge already
//! has, and name the events to record.
//!
//! Each active instance is one activation, identified by the instance and its end (so an
//! extension, which moves the end, is a new activation with the new `endsAt`). A user whose latest
//! Graph-sourced event is an activation and who has no active instance any more was deactivated.

use time::OffsetDateTime;

use crate::graph::AssignmentInstance;

/// The newest Graph-sourced event of one user in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub principal_id: String,
    pub activation: bool,
    pub source_event_id: String,
}

/// An activation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub id: String,
    /// The grant: the PIM instance, whatever its end (a new end is an extension of it).
    pub grant_id: String,
    pub principal_id: String,
    pub start: Option<OffsetDateTime>,
    pub end: Option<OffsetDateTime>,
}

/// A deactivation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivation {
    pub id: String,
    pub principal_id: String,
}

/// The event id of an instance: the instance and its end.
pub fn activation_id(instance: &AssignmentInstance) -> String {
    let end = instance
        .end
        .map_or_else(|| "open".to_owned(), |e| e.unix_timestamp().to_string());
    format!("instance:{}:{end}", instance.id)
}

/// The member instances that count as activations (PIM JIT `activated`, and an administrator's
/// active `assigned` assignment, docs/architecture.md), one per user: the one ending last.
pub fn active_by_user(instances: &[AssignmentInstance]) -> Vec<&AssignmentInstance> {
    let mut chosen: Vec<&AssignmentInstance> = Vec::new();
    for instance in instances
        .iter()
        .filter(|i| i.access_id.eq_ignore_ascii_case("member"))
    {
        match chosen
            .iter_mut()
            .find(|c| c.principal_id == instance.principal_id)
        {
            // No end means no end: it outlasts any dated instance.
            Some(c) if c.end.is_some() && instance.end.is_none_or(|e| Some(e) > c.end) => {
                *c = instance
            }
            Some(_) => {}
            None => chosen.push(instance),
        }
    }
    chosen
}

/// The activations not recorded yet (`recorded` holds the ids already stored) and the
/// deactivations of users whose activation Graph no longer lists.
pub fn changes(
    instances: &[AssignmentInstance],
    known: &[Known],
    recorded: &[String],
) -> (Vec<Activation>, Vec<Deactivation>) {
    let active = active_by_user(instances);
    let activations = active
        .iter()
        .map(|i| Activation {
            id: activation_id(i),
            grant_id: format!("instance:{}", i.id),
            principal_id: i.principal_id.clone(),
            start: i.start,
            end: i.end,
        })
        .filter(|a| !recorded.contains(&a.id))
        .collect();
    let deactivations = known
        .iter()
        .filter(|k| k.activation)
        .filter(|k| !active.iter().any(|i| i.principal_id == k.principal_id))
        .map(|k| Deactivation {
            id: format!("ended:{}", k.source_event_id),
            principal_id: k.principal_id.clone(),
        })
        .collect();
    (activations, deactivations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn instance(id: &str, user: &str, end: Option<OffsetDateTime>) -> AssignmentInstance {
        AssignmentInstance {
            id: id.into(),
            group_id: "g".into(),
            principal_id: user.into(),
            access_id: "member".into(),
            assignment_type: "activated".into(),
            member_type: Some("direct".into()),
            start: Some(datetime!(2026-11-28 10:00 UTC)),
            end,
        }
    }

    #[test]
    fn a_new_instance_is_an_activation_and_a_recorded_one_is_not() {
        let i = instance("i1", "alice", Some(datetime!(2026-11-28 18:00 UTC)));
        let (new, gone) = changes(std::slice::from_ref(&i), &[], &[]);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].principal_id, "alice");
        assert!(gone.is_empty());
        let (again, _) = changes(std::slice::from_ref(&i), &[], &[activation_id(&i)]);
        assert!(again.is_empty());
    }

    #[test]
    fn an_extension_is_a_new_activation_with_the_new_end() {
        let first = instance("i1", "alice", Some(datetime!(2026-11-28 18:00 UTC)));
        let extended = instance("i1", "alice", Some(datetime!(2026-11-28 20:00 UTC)));
        assert_ne!(activation_id(&first), activation_id(&extended));
        let (new, _) = changes(&[extended], &[], &[activation_id(&first)]);
        assert_eq!(new[0].end, Some(datetime!(2026-11-28 20:00 UTC)));
    }

    #[test]
    fn a_known_activation_without_an_instance_is_a_deactivation() {
        let known = vec![
            Known {
                principal_id: "bob".into(),
                activation: true,
                source_event_id: "instance:i9:1".into(),
            },
            Known {
                principal_id: "carol".into(),
                activation: false,
                source_event_id: "ended:x".into(),
            },
        ];
        let (_, gone) = changes(&[], &known, &[]);
        assert_eq!(
            gone,
            vec![Deactivation {
                id: "ended:instance:i9:1".into(),
                principal_id: "bob".into()
            }]
        );
    }

    #[test]
    fn owners_are_ignored_and_one_instance_per_user_is_kept() {
        let mut owner = instance("o1", "dave", None);
        owner.access_id = "owner".into();
        let short = instance("s", "erin", Some(datetime!(2026-11-28 12:00 UTC)));
        let long = instance("l", "erin", Some(datetime!(2026-11-28 16:00 UTC)));
        let instances = [owner, short, long];
        let kept = active_by_user(&instances);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].id, "l");
    }
}
