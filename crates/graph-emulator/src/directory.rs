//! The emulated tenant: users, groups, PIM-for-Groups assignment instances and Graph
//! subscriptions, in memory.
//!
//! Users and groups are stored as the Graph client's own wire types, so the emulator answers
//! exactly what the client reads. Instances are kept in insertion order, which makes paging
//! stable while nothing changes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::secret::SecretString;
use crate::wire::{
    optional_time, AssignmentInstance, GraphGroup, GraphUser, ACCESS_MEMBER, ACCESS_OWNER,
    ASSIGNMENT_ACTIVATED, ASSIGNMENT_ASSIGNED,
};

/// Activation length when none is given: PIM's common eight-hour maximum.
pub const DEFAULT_ACTIVATION: Duration = Duration::from_secs(8 * 60 * 60);

/// What the control API can get wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no group with id {0}")]
    UnknownGroup(String),
    #[error("no user or group with id {0} to be a principal")]
    UnknownPrincipal(String),
    #[error("no subscription with id {0}")]
    UnknownSubscription(String),
    #[error("subscription {0} has no lifecycleNotificationUrl")]
    NoLifecycleUrl(String),
    #[error("{0}")]
    Invalid(String),
}

/// An assignment instance to create: an activation, a standing assignment, or an owner.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewInstance {
    #[serde(default)]
    pub group_id: String,
    pub principal_id: String,
    /// `member` (default) or `owner`.
    #[serde(default = "member")]
    pub access_id: String,
    /// `activated` (default) or `assigned`.
    #[serde(default = "activated")]
    pub assignment_type: String,
    /// `direct` (default) or `group`.
    #[serde(default = "direct")]
    pub member_type: String,
    /// Default: now.
    #[serde(rename = "startDateTime", default, with = "optional_time")]
    pub start: Option<OffsetDateTime>,
    /// Default for an activation: start + `durationSeconds`, else start +
    /// [`DEFAULT_ACTIVATION`]; for an assignment: no end.
    #[serde(rename = "endDateTime", default, with = "optional_time")]
    pub end: Option<OffsetDateTime>,
    /// Length of the instance in seconds, instead of `endDateTime`.
    #[serde(default)]
    pub duration_seconds: Option<u64>,
}

fn member() -> String {
    ACCESS_MEMBER.to_owned()
}

fn activated() -> String {
    ASSIGNMENT_ACTIVATED.to_owned()
}

fn direct() -> String {
    "direct".to_owned()
}

impl NewInstance {
    /// A member activation of `principal_id` in `group_id` lasting `duration` (whole
    /// seconds) from now.
    pub fn activation(group_id: &str, principal_id: &str, duration: Duration) -> Self {
        Self {
            group_id: group_id.to_owned(),
            principal_id: principal_id.to_owned(),
            access_id: member(),
            assignment_type: activated(),
            member_type: direct(),
            start: None,
            end: None,
            duration_seconds: Some(duration.as_secs()),
        }
    }

    /// A standing member assignment without end.
    pub fn assignment(group_id: &str, principal_id: &str) -> Self {
        Self {
            assignment_type: ASSIGNMENT_ASSIGNED.to_owned(),
            duration_seconds: None,
            ..Self::activation(group_id, principal_id, Duration::ZERO)
        }
    }

    /// The same instance as an ownership (`accessId` `owner`) instead of a membership.
    pub fn as_owner(mut self) -> Self {
        self.access_id = ACCESS_OWNER.to_owned();
        self
    }

    /// The instance Graph would list, with defaults filled in.
    fn materialise(self, now: OffsetDateTime) -> AssignmentInstance {
        let start = to_tick(self.start.unwrap_or(now));
        let end = match (self.end, self.duration_seconds) {
            (Some(end), _) => Some(end),
            (None, Some(seconds)) => Some(start + Duration::from_secs(seconds)),
            (None, None) if self.assignment_type == ASSIGNMENT_ACTIVATED => {
                Some(start + DEFAULT_ACTIVATION)
            }
            (None, None) => None,
        }
        .map(to_tick);
        AssignmentInstance {
            id: uuid::Uuid::new_v4().to_string(),
            group_id: self.group_id,
            principal_id: self.principal_id,
            access_id: self.access_id,
            assignment_type: self.assignment_type,
            member_type: Some(self.member_type),
            start: Some(start),
            end,
        }
    }
}

/// `at` at Graph's precision, 100 ns (a .NET tick), so what is stored is what is listed.
pub(crate) fn to_tick(at: OffsetDateTime) -> OffsetDateTime {
    let nanos = at.nanosecond();
    at.replace_nanosecond(nanos - nanos % 100).unwrap_or(at)
}

/// A subscription as the emulator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedSubscription {
    pub id: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    pub resource: String,
    pub expiration: OffsetDateTime,
    pub client_state: SecretString,
    /// The client id that created it.
    pub application_id: String,
}

impl EmulatedSubscription {
    /// True when a change of group `group_id` concerns this subscription: its resource is
    /// `/groups`, `/groups/{id}` or `/groups/{id}/members` and it asks for `updated`.
    pub fn watches_group(&self, group_id: &str) -> bool {
        let resource = normalise_resource(&self.resource);
        let wanted = self
            .change_type
            .split(',')
            .any(|c| c.trim().eq_ignore_ascii_case("updated"));
        let group = group_id.to_ascii_lowercase();
        let names_group = resource == "groups"
            || resource == format!("groups/{group}")
            || resource == format!("groups/{group}/members");
        wanted && names_group
    }

    /// Same changeType and resource as another request (Graph's duplicate rule).
    pub fn same_target(&self, change_type: &str, resource: &str) -> bool {
        normalise_change_type(&self.change_type) == normalise_change_type(change_type)
            && normalise_resource(&self.resource) == normalise_resource(resource)
    }
}

/// `/Groups/G1/` → `groups/g1`: Graph paths and directory ids ignore case.
pub(crate) fn normalise_resource(resource: &str) -> String {
    resource.trim().trim_matches('/').to_ascii_lowercase()
}

fn normalise_change_type(change_type: &str) -> Vec<String> {
    let mut kinds: Vec<String> = change_type
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Everything the emulated tenant holds.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    users: BTreeMap<String, GraphUser>,
    groups: BTreeMap<String, GraphGroup>,
    instances: Vec<AssignmentInstance>,
    subscriptions: BTreeMap<String, EmulatedSubscription>,
}

/// A dump of the tenant for the control API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryDump {
    pub users: Vec<GraphUser>,
    pub groups: Vec<GraphGroup>,
    pub instances: Vec<AssignmentInstance>,
}

impl Directory {
    pub fn put_user(&mut self, user: GraphUser) {
        self.users.insert(user.id.clone(), user);
    }

    /// Removes the user and the instances it holds.
    pub fn remove_user(&mut self, id: &str) -> bool {
        self.instances.retain(|i| i.principal_id != id);
        self.users.remove(id).is_some()
    }

    pub fn put_group(&mut self, group: GraphGroup) {
        self.groups.insert(group.id.clone(), group);
    }

    /// Removes the group and the instances in it or held by it.
    pub fn remove_group(&mut self, id: &str) -> bool {
        self.instances
            .retain(|i| i.group_id != id && i.principal_id != id);
        self.groups.remove(id).is_some()
    }

    /// A user by id or userPrincipalName (Graph accepts either in `/users/{id}`).
    pub fn user(&self, key: &str) -> Option<&GraphUser> {
        self.users.get(key).or_else(|| {
            self.users.values().find(|u| {
                u.user_principal_name
                    .as_deref()
                    .is_some_and(|upn| upn.eq_ignore_ascii_case(key))
            })
        })
    }

    pub fn group(&self, id: &str) -> Option<&GraphGroup> {
        self.groups.get(id)
    }

    pub fn add_instance(
        &mut self,
        new: NewInstance,
        now: OffsetDateTime,
    ) -> Result<AssignmentInstance, ControlError> {
        if !self.groups.contains_key(&new.group_id) {
            return Err(ControlError::UnknownGroup(new.group_id));
        }
        let principal = new.principal_id.as_str();
        if !self.users.contains_key(principal) && !self.groups.contains_key(principal) {
            return Err(ControlError::UnknownPrincipal(new.principal_id));
        }
        let instance = new.materialise(now);
        if instance.end.is_some_and(|end| Some(end) <= instance.start) {
            return Err(ControlError::Invalid(
                "the end must be after the start".to_owned(),
            ));
        }
        self.instances.push(instance.clone());
        Ok(instance)
    }

    /// Removes the activations of `principal_id` in `group_id`; how many there were.
    pub fn remove_activations(&mut self, group_id: &str, principal_id: &str) -> usize {
        let before = self.instances.len();
        self.instances.retain(|i| {
            !(i.group_id == group_id && i.principal_id == principal_id && i.is_activation())
        });
        before - self.instances.len()
    }

    /// The instances Graph would list now: started, not ended, matching the filter.
    pub fn active_instances(
        &self,
        group_id: &str,
        principal_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Vec<AssignmentInstance> {
        self.instances
            .iter()
            .filter(|i| i.group_id == group_id)
            .filter(|i| principal_id.is_none_or(|p| i.principal_id == p))
            .filter(|i| i.start.is_none_or(|s| s <= now) && i.end.is_none_or(|e| e > now))
            .cloned()
            .collect()
    }

    pub fn dump(&self) -> DirectoryDump {
        DirectoryDump {
            users: self.users.values().cloned().collect(),
            groups: self.groups.values().cloned().collect(),
            instances: self.instances.clone(),
        }
    }

    pub fn subscriptions(&self) -> Vec<EmulatedSubscription> {
        self.subscriptions.values().cloned().collect()
    }

    pub fn subscription(&self, id: &str) -> Option<&EmulatedSubscription> {
        self.subscriptions.get(id)
    }

    pub fn subscription_mut(&mut self, id: &str) -> Option<&mut EmulatedSubscription> {
        self.subscriptions.get_mut(id)
    }

    /// The live subscription with the same changeType and resource, if any.
    pub fn duplicate_of(
        &self,
        change_type: &str,
        resource: &str,
        now: OffsetDateTime,
    ) -> Option<&EmulatedSubscription> {
        self.subscriptions
            .values()
            .find(|s| s.expiration > now && s.same_target(change_type, resource))
    }

    pub fn insert_subscription(&mut self, subscription: EmulatedSubscription) {
        self.subscriptions
            .insert(subscription.id.clone(), subscription);
    }

    pub fn remove_subscription(&mut self, id: &str) -> bool {
        self.subscriptions.remove(id).is_some()
    }

    /// Live subscriptions that a change of `group_id` notifies.
    pub fn watchers_of(&self, group_id: &str, now: OffsetDateTime) -> Vec<EmulatedSubscription> {
        self.subscriptions
            .values()
            .filter(|s| s.expiration > now && s.watches_group(group_id))
            .cloned()
            .collect()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn subscription(resource: &str, change_type: &str) -> EmulatedSubscription {
        EmulatedSubscription {
            id: "s".into(),
            change_type: change_type.into(),
            notification_url: "http://x".into(),
            lifecycle_notification_url: None,
            resource: resource.into(),
            expiration: datetime!(2100-01-01 0:00 UTC),
            client_state: SecretString::new("c"),
            application_id: "a".into(),
        }
    }

    #[test]
    fn group_changes_reach_group_member_and_collection_subscriptions_only() {
        for (resource, change_type, expected) in [
            ("/groups/g1", "updated", true),
            ("/groups/g1/members", "updated,deleted", true),
            ("groups", "updated", true),
            ("/Groups/G1/", "Updated", true),
            ("/groups/g2", "updated", false),
            ("/groups/g1", "deleted", false),
            ("/users", "updated", false),
            ("/groups/g1/owners", "updated", false),
            ("/groupsX", "updated", false),
        ] {
            assert_eq!(
                subscription(resource, change_type).watches_group("g1"),
                expected,
                "{resource} {change_type}"
            );
        }
    }

    #[test]
    fn duplicates_ignore_order_case_and_slashes_but_not_the_target() {
        let s = subscription("/groups/g1/members", "updated,deleted");
        assert!(s.same_target("deleted, updated", "Groups/g1/Members/"));
        assert!(s.same_target("updated,deleted", "/groups/G1/members"));
        assert!(!s.same_target("updated", "/groups/g1/members"));
        assert!(!s.same_target("updated,deleted", "/groups/g2/members"));
    }

    #[test]
    fn only_started_unexpired_instances_are_listed() {
        let mut d = Directory::default();
        d.put_group(GraphGroup {
            id: "g".into(),
            display_name: None,
        });
        d.put_user(GraphUser {
            id: "u".into(),
            user_principal_name: None,
            given_name: None,
            surname: None,
            display_name: None,
            mail: None,
        });
        let now = datetime!(2026-11-28 10:00 UTC);
        let at = |start, end| NewInstance {
            start: Some(start),
            end: Some(end),
            ..NewInstance::activation("g", "u", Duration::ZERO)
        };
        d.add_instance(
            at(now - Duration::from_secs(60), now + Duration::from_secs(60)),
            now,
        )
        .unwrap();
        d.add_instance(
            at(
                now - Duration::from_secs(120),
                now - Duration::from_secs(60),
            ),
            now,
        )
        .unwrap();
        d.add_instance(
            at(
                now + Duration::from_secs(60),
                now + Duration::from_secs(120),
            ),
            now,
        )
        .unwrap();
        assert_eq!(d.active_instances("g", None, now).len(), 1);
        assert_eq!(d.active_instances("g", Some("other"), now).len(), 0);
        assert_eq!(
            d.add_instance(
                NewInstance::activation("nope", "u", DEFAULT_ACTIVATION),
                now
            ),
            Err(ControlError::UnknownGroup("nope".into()))
        );
    }
}
