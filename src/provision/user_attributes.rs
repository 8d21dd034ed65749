//! Keeping a known user's attributes current in AWS: when an event carries a userName, name,
//! display name or e-mail that differs from what pimbridge last knew AWS holds for the user, the
//! user is updated (one `PATCH /Users/{id}`) before the membership change, and the step is logged.
//! What AWS holds is remembered beside the user's cached id, so an unchanged user costs nothing.
//!
//! A failed update never stands in the way of the membership change: access follows the grants;
//! attributes follow at the next event that carries them.

use serde_json::{json, Map, Value};

use super::resolve::source_user;
use super::{LogIds, ProvisionError, Provisioner, Target};
use crate::domain::Subject;
use crate::scim::mapping::{check_user, SourceUser};
use crate::scim::types::{MultiValuedAttribute, Name};
use crate::scim::ScimUser;
use crate::store::provisioning_log::{LogAction, Status};
use crate::store::scim_ids;
use crate::telemetry::error_chain;

/// The attributes compared, by their key in the remembered snapshot and their SCIM PATCH path.
const ATTRIBUTES: [(&str, &str); 5] = [
    ("userName", "userName"),
    ("givenName", "name.givenName"),
    ("familyName", "name.familyName"),
    ("displayName", "displayName"),
    ("email", "emails"),
];

/// What AWS holds for the compared attributes of `user`.
pub fn snapshot(user: &ScimUser) -> Value {
    let name = user.name.as_ref();
    let email = user
        .emails
        .iter()
        .find(|e| e.primary == Some(true))
        .or_else(|| user.emails.first())
        .and_then(|e| e.value.clone());
    json!({
        "userName": user.user_name,
        "givenName": name.and_then(|n| n.given_name.clone()),
        "familyName": name.and_then(|n| n.family_name.clone()),
        "displayName": user.display_name,
        "email": email,
    })
}

/// The attributes an event asks for (only those it carries), as snapshot keys.
fn wanted(source: &SourceUser) -> Map<String, Value> {
    let mut wanted = Map::new();
    let values = [
        ("userName", &source.user_name),
        ("givenName", &source.given_name),
        ("familyName", &source.family_name),
        ("displayName", &source.display_name),
        ("email", &source.emails.first().cloned()),
    ];
    for (key, value) in values {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            wanted.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    wanted
}

/// A user holding `known`'s attributes with `wanted`'s on top.
fn user_from(known: &Value, wanted: &Map<String, Value>) -> ScimUser {
    let get = |key: &str| {
        wanted
            .get(key)
            .or_else(|| known.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ScimUser {
        user_name: get("userName"),
        name: Some(Name {
            given_name: get("givenName"),
            family_name: get("familyName"),
            ..Name::default()
        }),
        display_name: get("displayName"),
        emails: get("email")
            .map(|value| {
                vec![MultiValuedAttribute {
                    value: Some(value),
                    kind: Some("work".into()),
                    primary: Some(true),
                    display: None,
                }]
            })
            .unwrap_or_default(),
        ..ScimUser::default()
    }
}

/// The PATCH operations (path, value) that turn `known` into what `wanted` asks for.
pub fn changes(known: &Value, wanted: &Map<String, Value>) -> Vec<(&'static str, Value)> {
    ATTRIBUTES
        .iter()
        .filter_map(|(key, path)| {
            let value = wanted.get(*key).filter(|v| !v.is_null())?;
            if known.get(*key) == Some(value) {
                return None;
            }
            let value = if *key == "email" {
                json!([{ "value": value, "type": "work", "primary": true }])
            } else {
                value.clone()
            };
            Some((*path, value))
        })
        .collect()
}

impl Provisioner {
    /// Updates the user `aws_id` in AWS when the subject's event carries attributes that differ
    /// from `known` (what AWS holds, read from AWS once when not known), and logs the step.
    /// Only a database failure is returned: an AWS failure is logged and left for a later event.
    pub(super) async fn keep_user_current(
        &self,
        db: &deadpool_postgres::Object,
        target: &Target,
        subject: &Subject,
        aws_id: &str,
        known: Option<Value>,
        log: LogIds<'_>,
    ) -> Result<(), ProvisionError> {
        let Some(source) = source_user(target, subject) else {
            return Ok(());
        };
        let wanted = wanted(&source);
        if wanted.is_empty() {
            return Ok(());
        }
        let client = &target.client;
        let known = match known {
            Some(known) => known,
            None => match client.get_user(aws_id).await {
                Ok(user) => {
                    let known = snapshot(&user);
                    scim_ids::put_attributes(
                        db,
                        &subject.application,
                        &subject.principal_id,
                        &known,
                    )
                    .await?;
                    known
                }
                Err(e) => {
                    tracing::warn!(error.message = %error_chain(&e),
                        "cannot read the user's attributes from AWS; not compared this time");
                    return Ok(());
                }
            },
        };
        // What AWS would hold after the update, checked as a creation is (character policy,
        // required attributes), so a value AWS would clean is not sent again and again.
        let mut next = user_from(&known, &wanted);
        if let Err(refused) = check_user(&mut next, client.character_policy()) {
            let reason = format!("the new attributes cannot be sent: {refused}");
            return log
                .append(
                    db,
                    subject,
                    LogAction::UpdateUser,
                    Status::Failed,
                    Some("invalid_user"),
                    &reason,
                )
                .await;
        }
        let wanted = match snapshot(&next) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let changes = changes(&known, &wanted);
        if changes.is_empty() {
            return Ok(());
        }
        let changed: Vec<&str> = changes.iter().map(|(path, _)| *path).collect();
        let changed = changed.join(", ");
        match client.patch_user(aws_id, &changes).await {
            Ok(user) => {
                scim_ids::put_attributes(
                    db,
                    &subject.application,
                    &subject.principal_id,
                    &snapshot(&user),
                )
                .await?;
                tracing::info!(principal_id = %subject.principal_id, changed = %changed,
                    "user attributes updated in AWS");
                let reason = format!("attributes changed in Entra: {changed}");
                log.append(
                    db,
                    subject,
                    LogAction::UpdateUser,
                    Status::Succeeded,
                    None,
                    &reason,
                )
                .await
            }
            Err(e) => {
                let e = ProvisionError::from(e);
                let reason = format!("updating {changed} failed: {}", error_chain(&e));
                tracing::warn!(principal_id = %subject.principal_id, error.message = %reason,
                    "cannot update the user's attributes in AWS; the membership change goes on");
                log.append(
                    db,
                    subject,
                    LogAction::UpdateUser,
                    Status::Failed,
                    Some(&e.code()),
                    &reason,
                )
                .await
            }
        }
    }

    /// Keeps the user of an event current when its membership needs no change: the user is
    /// updated only if AWS already knows it (its id is cached).
    pub(super) async fn refresh_user(
        &self,
        db: &deadpool_postgres::Object,
        target: &Target,
        subject: &Subject,
        log: LogIds<'_>,
    ) -> Result<(), ProvisionError> {
        if subject.user_attributes.is_none() {
            return Ok(());
        }
        let cached = self.cached(db, subject, log.journal).await?;
        match cached.user {
            Some(id) => {
                self.keep_user_current(db, target, subject, &id, cached.user_attributes, log)
                    .await
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(user_name: &str, display: Option<&str>, email: Option<&str>) -> SourceUser {
        SourceUser {
            object_id: "u1".into(),
            user_name: Some(user_name.into()),
            display_name: display.map(str::to_owned),
            emails: email.map(|e| vec![e.to_owned()]).unwrap_or_default(),
            ..SourceUser::default()
        }
    }

    #[test]
    fn an_unchanged_user_needs_no_request() {
        let known = json!({"userName": "a@x.com", "displayName": "A", "email": "a@x.com",
                           "givenName": "G", "familyName": "F"});
        let wanted = wanted(&source("a@x.com", Some("A"), Some("a@x.com")));
        assert!(changes(&known, &wanted).is_empty());
    }

    #[test]
    fn only_what_the_event_carries_and_differs_is_sent() {
        let known = json!({"userName": "a@x.com", "displayName": "A", "email": "a@x.com",
                           "givenName": "G", "familyName": "F"});
        // The event says nothing of the names: they are not touched.
        let wanted = wanted(&source("b@x.com", Some("A"), Some("b@x.com")));
        let changes = changes(&known, &wanted);
        let paths: Vec<&str> = changes.iter().map(|(p, _)| *p).collect();
        assert_eq!(paths, ["userName", "emails"]);
        assert_eq!(
            changes[1].1,
            json!([{"value": "b@x.com", "type": "work", "primary": true}])
        );
    }

    #[test]
    fn the_snapshot_reads_the_primary_email() {
        let user: ScimUser = serde_json::from_value(json!({
            "id": "1", "userName": "a@x.com", "displayName": "A",
            "name": {"givenName": "G", "familyName": "F"},
            "emails": [{"value": "old@x.com"}, {"value": "a@x.com", "primary": true}]
        }))
        .unwrap();
        assert_eq!(snapshot(&user)["email"], "a@x.com");
        assert_eq!(snapshot(&user)["givenName"], "G");
    }
}
