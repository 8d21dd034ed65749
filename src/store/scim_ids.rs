//! Cache of AWS resource ids by Entra object id, per application.

use deadpool_postgres::GenericClient;
use serde_json::Value;

use super::StoreError;

/// What a cached id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    User,
    Group,
}

impl ObjectKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
        }
    }
}

/// The cached AWS ids of a job's user and group, where known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachedPair {
    pub user: Option<String>,
    pub group: Option<String>,
    /// What pimbridge last knew AWS holds for the user's attributes, if it knows.
    pub user_attributes: Option<Value>,
}

/// Reads the cached ids of one user and one group of an application in a single query.
pub async fn get_pair(
    client: &impl GenericClient,
    application: &str,
    user_entra_id: &str,
    group_entra_id: &str,
) -> Result<CachedPair, StoreError> {
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "SELECT kind, aws_id, attributes FROM scim_ids
             WHERE application = $1
               AND ((kind = 'user' AND entra_id = $2) OR (kind = 'group' AND entra_id = $3))",
                )
                .await?,
            &[&application, &user_entra_id, &group_entra_id],
        )
        .await?;
    let mut pair = CachedPair::default();
    for row in rows {
        let aws_id: String = row.get(1);
        match row.get::<_, &str>(0) {
            "user" => {
                pair.user = Some(aws_id);
                pair.user_attributes = row.get(2);
            }
            _ => pair.group = Some(aws_id),
        }
    }
    Ok(pair)
}

/// Records (or replaces) an AWS id, with what AWS holds for the user's attributes when known, in
/// one statement. Attributes remembered for another AWS id are forgotten with it.
pub async fn put(
    client: &impl GenericClient,
    application: &str,
    kind: ObjectKind,
    entra_id: &str,
    aws_id: &str,
    attributes: Option<&Value>,
) -> Result<(), StoreError> {
    client
        .execute(
            &client
                .prepare_cached(
                    "INSERT INTO scim_ids AS s (application, kind, entra_id, aws_id, attributes)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (application, kind, entra_id)
             DO UPDATE SET aws_id = EXCLUDED.aws_id, resolved_at = now(),
                 attributes = CASE WHEN EXCLUDED.attributes IS NOT NULL THEN EXCLUDED.attributes
                                   WHEN s.aws_id = EXCLUDED.aws_id THEN s.attributes END",
                )
                .await?,
            &[
                &application,
                &kind.as_str(),
                &entra_id,
                &aws_id,
                &attributes,
            ],
        )
        .await?;
    Ok(())
}

/// Forgets an id that AWS no longer knows (404).
pub async fn forget(
    client: &impl GenericClient,
    application: &str,
    kind: ObjectKind,
    entra_id: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "DELETE FROM scim_ids WHERE application = $1 AND kind = $2 AND entra_id = $3",
            &[&application, &kind.as_str(), &entra_id],
        )
        .await?;
    Ok(())
}

/// Records what AWS holds for a cached user's attributes (after creating, finding, reading or
/// updating the user).
pub async fn put_attributes(
    client: &impl GenericClient,
    application: &str,
    entra_id: &str,
    attributes: &Value,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE scim_ids SET attributes = $3
             WHERE application = $1 AND kind = 'user' AND entra_id = $2",
            &[&application, &entra_id, attributes],
        )
        .await?;
    Ok(())
}
