//! In-memory users and groups.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::clock;
use super::settings::EmulatorSettings;
use super::{CORE_USER_URN, ENTERPRISE_USER_URN, GROUP_URN};

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub id: String,
    pub seq: u64,
    /// Canonical attributes (see `validate::canonical_user`).
    pub attrs: Map<String, Value>,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
    pub born: Instant,
}

impl User {
    pub fn user_name(&self) -> &str {
        str_at(&self.attrs, "userName").unwrap_or_default()
    }

    pub fn external_id(&self) -> Option<&str> {
        str_at(&self.attrs, "externalId")
    }

    pub fn manager_id(&self) -> Option<&str> {
        self.attrs
            .get(ENTERPRISE_USER_URN)
            .and_then(|e| e.get("manager"))
            .and_then(|m| m.get("value"))
            .and_then(Value::as_str)
    }

    /// The SCIM representation.
    pub fn render(&self) -> Value {
        let mut out = self.attrs.clone();
        let mut schemas = vec![json!(CORE_USER_URN)];
        if out.contains_key(ENTERPRISE_USER_URN) {
            schemas.push(json!(ENTERPRISE_USER_URN));
        }
        out.insert("id".to_owned(), json!(self.id));
        out.insert("schemas".to_owned(), Value::Array(schemas));
        out.insert(
            "meta".to_owned(),
            json!({
                "resourceType": "User",
                "created": clock::meta_timestamp(self.created),
                "lastModified": clock::meta_timestamp(self.last_modified),
            }),
        );
        Value::Object(out)
    }
}

/// The primary email of a canonical user map.
pub(crate) fn primary_email(attrs: &Map<String, Value>) -> Option<&str> {
    attrs
        .get("emails")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
}

fn str_at<'a>(attrs: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    attrs.get(key).and_then(Value::as_str)
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: String,
    pub seq: u64,
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: BTreeSet<String>,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
    pub born: Instant,
}

impl Group {
    /// The SCIM representation; `with_empty_members` adds `"members": []` (list responses).
    pub fn render(&self, with_empty_members: bool) -> Value {
        let mut out = Map::new();
        out.insert("id".to_owned(), json!(self.id));
        if let Some(external_id) = &self.external_id {
            out.insert("externalId".to_owned(), json!(external_id));
        }
        out.insert(
            "meta".to_owned(),
            json!({
                "resourceType": "Group",
                "created": clock::meta_timestamp(self.created),
                "lastModified": clock::meta_timestamp(self.last_modified),
            }),
        );
        out.insert("schemas".to_owned(), json!([GROUP_URN]));
        out.insert("displayName".to_owned(), json!(self.display_name));
        if with_empty_members {
            out.insert("members".to_owned(), json!([]));
        }
        Value::Object(out)
    }
}

/// A group as shown by the inspection API: with its member ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupDump {
    pub id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    /// Member user ids, sorted.
    pub members: Vec<String>,
    pub created: String,
    pub last_modified: String,
}

/// Everything the emulator holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDump {
    /// Users as SCIM would return them, in creation order.
    pub users: Vec<Value>,
    /// Groups with their member ids, in creation order.
    pub groups: Vec<GroupDump>,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    next_seq: u64,
    users: BTreeMap<u64, User>,
    user_seq: HashMap<String, u64>,
    /// The users (by sequence) holding each value that must be unique among users, so that a
    /// uniqueness check or a userName filter reads the users sharing a value, not every user
    /// (creating n users cost n² comparisons otherwise).
    user_keys: HashMap<UserKey, BTreeSet<u64>>,
    groups: BTreeMap<u64, Group>,
    group_seq: HashMap<String, u64>,
}

/// A value that must be unique among users. Names and emails are kept lower-cased (as
/// [`same_ignoring_case`] compares them), so a key finds every user that may match; the match
/// itself is then decided as before (a case-sensitive userName compares exactly).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum UserKey {
    Name(String),
    Email(String),
    External(String),
}

fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

fn user_keys(attrs: &Map<String, Value>) -> Vec<UserKey> {
    let mut keys = vec![UserKey::Name(lower(
        str_at(attrs, "userName").unwrap_or_default(),
    ))];
    if let Some(email) = primary_email(attrs) {
        keys.push(UserKey::Email(lower(email)));
    }
    if let Some(external) = str_at(attrs, "externalId") {
        keys.push(UserKey::External(external.to_owned()));
    }
    keys
}

fn same_name(a: &str, b: &str, case_insensitive: bool) -> bool {
    if case_insensitive {
        same_ignoring_case(a, b)
    } else {
        a == b
    }
}

/// `a.to_lowercase() == b.to_lowercase()` without allocating: a uniqueness check compares a new
/// user with every stored one.
fn same_ignoring_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

impl Store {
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub fn new_id(settings: &EmulatorSettings) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        if settings.prefixed_ids {
            let prefix = uuid::Uuid::new_v4().simple().to_string();
            format!("{}-{id}", &prefix[..10])
        } else {
            id
        }
    }

    // ---- users ----

    pub fn user(&self, id: &str) -> Option<&User> {
        self.user_seq.get(id).and_then(|s| self.users.get(s))
    }

    /// Replaces the attributes of user `id`, and returns it.
    pub fn replace_user_attrs(&mut self, id: &str, attrs: Map<String, Value>) -> Option<&User> {
        let seq = *self.user_seq.get(id)?;
        let user = self.users.get_mut(&seq)?;
        let old = std::mem::replace(&mut user.attrs, attrs);
        user.last_modified = clock::now();
        let new = user_keys(&user.attrs);
        self.unindex_user(seq, &old);
        self.index_keys(seq, new);
        self.users.get(&seq)
    }

    fn index_keys(&mut self, seq: u64, keys: Vec<UserKey>) {
        for key in keys {
            self.user_keys.entry(key).or_default().insert(seq);
        }
    }

    fn unindex_user(&mut self, seq: u64, attrs: &Map<String, Value>) {
        for key in user_keys(attrs) {
            if let Some(seqs) = self.user_keys.get_mut(&key) {
                seqs.remove(&seq);
                if seqs.is_empty() {
                    self.user_keys.remove(&key);
                }
            }
        }
    }

    /// The users holding `key`, in creation order.
    fn users_with(&self, key: &UserKey) -> impl Iterator<Item = &User> {
        self.user_keys
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|seq| self.users.get(seq))
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// True when `attrs` would violate a uniqueness rule against any user but `except`.
    pub fn user_conflicts(
        &self,
        attrs: &Map<String, Value>,
        except: Option<&str>,
        settings: &EmulatorSettings,
    ) -> bool {
        let name = str_at(attrs, "userName").unwrap_or_default();
        let email = primary_email(attrs);
        let external = str_at(attrs, "externalId");
        user_keys(attrs)
            .iter()
            .flat_map(|key| self.users_with(key))
            .filter(|u| Some(u.id.as_str()) != except)
            .any(|u| {
                same_name(u.user_name(), name, settings.user_name_case_insensitive)
                    || matches!((email, primary_email(&u.attrs)), (Some(a), Some(b)) if same_ignoring_case(a, b))
                    || matches!((external, u.external_id()), (Some(a), Some(b)) if a == b)
            })
    }

    pub fn insert_user(&mut self, attrs: Map<String, Value>, settings: &EmulatorSettings) -> &User {
        let seq = self.next_seq();
        let now = clock::now();
        let user = User {
            id: Self::new_id(settings),
            seq,
            attrs,
            created: now,
            last_modified: now,
            born: Instant::now(),
        };
        self.user_seq.insert(user.id.clone(), seq);
        self.index_keys(seq, user_keys(&user.attrs));
        self.users.entry(seq).or_insert(user)
    }

    pub fn remove_user(&mut self, id: &str) -> bool {
        let Some(seq) = self.user_seq.remove(id) else {
            return false;
        };
        if let Some(user) = self.users.remove(&seq) {
            self.unindex_user(seq, &user.attrs);
        }
        for group in self.groups.values_mut() {
            group.members.remove(id);
        }
        true
    }

    pub fn find_user_by_name(
        &self,
        name: &str,
        settings: &EmulatorSettings,
    ) -> impl Iterator<Item = &User> {
        let ci = settings.user_name_case_insensitive;
        let name = name.to_owned();
        self.users_with(&UserKey::Name(lower(&name)))
            .filter(move |u| same_name(u.user_name(), &name, ci))
    }

    // ---- groups ----

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.group_seq.get(id).and_then(|s| self.groups.get(s))
    }

    pub fn group_mut(&mut self, id: &str) -> Option<&mut Group> {
        let seq = *self.group_seq.get(id)?;
        self.groups.get_mut(&seq)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn group_name_taken(
        &self,
        name: &str,
        except: Option<&str>,
        settings: &EmulatorSettings,
    ) -> bool {
        self.groups
            .values()
            .filter(|g| Some(g.id.as_str()) != except)
            .any(|g| same_name(&g.display_name, name, settings.group_name_case_insensitive))
    }

    pub fn groups_named(&self, name: &str, case_insensitive: bool) -> impl Iterator<Item = &Group> {
        let name = name.to_owned();
        self.groups
            .values()
            .filter(move |g| same_name(&g.display_name, &name, case_insensitive))
    }

    pub fn insert_group(
        &mut self,
        display_name: String,
        external_id: Option<String>,
        members: impl IntoIterator<Item = String>,
        settings: &EmulatorSettings,
    ) -> &Group {
        let seq = self.next_seq();
        let now = clock::now();
        let group = Group {
            id: Self::new_id(settings),
            seq,
            display_name,
            external_id,
            members: members.into_iter().collect(),
            created: now,
            last_modified: now,
            born: Instant::now(),
        };
        self.group_seq.insert(group.id.clone(), seq);
        self.groups.entry(seq).or_insert(group)
    }

    pub fn remove_group(&mut self, id: &str) -> bool {
        match self.group_seq.remove(id) {
            Some(seq) => self.groups.remove(&seq).is_some(),
            None => false,
        }
    }

    // ---- inspection ----

    pub fn dump_group(&self, group: &Group) -> GroupDump {
        GroupDump {
            id: group.id.clone(),
            display_name: group.display_name.clone(),
            external_id: group.external_id.clone(),
            members: group.members.iter().cloned().collect(),
            created: clock::meta_timestamp(group.created),
            last_modified: clock::meta_timestamp(group.last_modified),
        }
    }

    pub fn dump(&self) -> StateDump {
        StateDump {
            users: self.users.values().map(User::render).collect(),
            groups: self.groups.values().map(|g| self.dump_group(g)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::{same_ignoring_case, Store};
    use crate::settings::EmulatorSettings;

    fn attrs(name: &str, email: &str, external: &str) -> Map<String, Value> {
        match json!({"userName": name, "emails": [{"value": email, "primary": true}],
                     "externalId": external})
        {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn uniqueness_follows_renames_and_removals() {
        let settings = EmulatorSettings::default();
        let mut store = Store::default();
        let id = store
            .insert_user(attrs("Ada", "ada@example.com", "x-1"), &settings)
            .id
            .clone();
        let conflicts = |store: &Store, a| store.user_conflicts(&a, None, &settings);
        assert!(conflicts(&store, attrs("ADA", "other@example.com", "x-2")));
        assert!(conflicts(&store, attrs("bea", "Ada@Example.COM", "x-2")));
        assert!(conflicts(&store, attrs("bea", "bea@example.com", "x-1")));
        assert!(!conflicts(&store, attrs("bea", "bea@example.com", "X-1")));
        // The user itself is not a conflict for its own update.
        assert!(!store.user_conflicts(
            &attrs("ada", "ada@example.com", "x-1"),
            Some(&id),
            &settings
        ));

        // Renamed: the old values are free, the new ones taken.
        store
            .replace_user_attrs(&id, attrs("Cyd", "cyd@example.com", "x-3"))
            .unwrap();
        assert!(!conflicts(&store, attrs("Ada", "ada@example.com", "x-1")));
        assert!(conflicts(&store, attrs("cyd", "z@example.com", "x-9")));
        assert_eq!(store.find_user_by_name("CYD", &settings).count(), 1);
        assert_eq!(store.find_user_by_name("Ada", &settings).count(), 0);

        // Removed: everything is free.
        assert!(store.remove_user(&id));
        assert!(!conflicts(&store, attrs("Cyd", "cyd@example.com", "x-3")));
        assert_eq!(store.find_user_by_name("Cyd", &settings).count(), 0);
    }

    #[test]
    fn a_case_sensitive_user_name_finds_only_its_exact_spelling() {
        let settings = EmulatorSettings {
            user_name_case_insensitive: false,
            ..EmulatorSettings::default()
        };
        let mut store = Store::default();
        store.insert_user(attrs("Ada", "ada@example.com", "x-1"), &settings);
        store.insert_user(attrs("ada", "ada2@example.com", "x-2"), &settings);
        let found: Vec<_> = store
            .find_user_by_name("ada", &settings)
            .map(|u| u.user_name().to_owned())
            .collect();
        assert_eq!(found, ["ada"]);
        assert!(!store.user_conflicts(&attrs("ADA", "b@example.com", "x-3"), None, &settings));
    }

    #[test]
    fn names_that_differ_only_in_case_are_the_same_and_others_are_not() {
        assert!(same_ignoring_case("Ada@Example.com", "ada@example.COM"));
        assert!(same_ignoring_case("ÄRGER@x.de", "ärger@X.DE"));
        assert!(!same_ignoring_case("ada@example.com", "ada@example.co"));
        assert!(!same_ignoring_case("ada@example.com", "ada@example.comm"));
        assert!(!same_ignoring_case("äda", "ada"));
    }
}
