//! A user's attributes as AWS needs them, read from Graph (`GET /users/{id}`).
//!
//! Some sources name a user without all that AWS requires to create one: an audit record carries
//! the object id, userPrincipalName and display name, but no given or family name. When Graph is
//! configured, provisioning completes such a user from here before giving up
//! (`dispatch::provision`); the resolver builds its events' `user` object the same way.

use serde_json::{Map, Value};

use super::{GraphClient, GraphError, GraphUser};

/// The attributes of Entra user `object_id` under the names our event's `user` object uses
/// (`userName`, `givenName`, `familyName`, `displayName`, `email`); `None` when Graph does not
/// know the user.
pub async fn scim_attributes(
    graph: &GraphClient,
    object_id: &str,
) -> Result<Option<Value>, GraphError> {
    Ok(graph
        .user(object_id)
        .await?
        .map(|user| event_attributes(&user)))
}

/// Our event's `user` object from a Graph user: only the attributes Graph has a value for.
pub fn event_attributes(user: &GraphUser) -> Value {
    let mut attributes = Map::new();
    for (name, value) in [
        ("userName", &user.user_principal_name),
        ("givenName", &user.given_name),
        ("familyName", &user.surname),
        ("displayName", &user.display_name),
        ("email", &user.mail),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
            attributes.insert(name.to_owned(), Value::String(value.to_owned()));
        }
    }
    Value::Object(attributes)
}

/// `attributes` with what they lack taken from `from_graph`. What the event says wins: it was
/// true when the event happened, and Graph is only asked for what is missing.
pub fn complete(attributes: Option<&Value>, from_graph: &Value) -> Value {
    let mut completed = attributes
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(graph) = from_graph.as_object() {
        for (name, value) in graph {
            let present = completed
                .get(name)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.trim().is_empty());
            if !present {
                completed.insert(name.clone(), value.clone());
            }
        }
    }
    Value::Object(completed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[test]
    fn completing_keeps_what_the_event_says_and_fills_the_rest() {
        let event = json!({"userName": "grace@contoso.com", "displayName": "Rear Admiral Hopper",
                           "givenName": " "});
        let graph = json!({"userName": "other@contoso.com", "givenName": "Grace",
                           "familyName": "Hopper", "displayName": "Grace Hopper"});

        assert_eq!(
            complete(Some(&event), &graph),
            json!({"userName": "grace@contoso.com", "displayName": "Rear Admiral Hopper",
                   "givenName": "Grace", "familyName": "Hopper"})
        );
        assert_eq!(complete(None, &graph), graph);
    }
}
