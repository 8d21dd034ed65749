//! Cache of AWS resource ids by Entra object id, per application.

use deadpool_postgres::GenericClient;

use super::StoreError;

/// What a cached id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The cached AWS id, if any.
pub async fn get(
    client: &impl GenericClient,
    application: &str,
    kind: ObjectKind,
    entra_id: &str,
) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt(
            "SELECT aws_id FROM scim_ids WHERE application = $1 AND kind = $2 AND entra_id = $3",
            &[&application, &kind.as_str(), &entra_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Records (or replaces) an AWS id.
pub async fn put(
    client: &impl GenericClient,
    application: &str,
    kind: ObjectKind,
    entra_id: &str,
    aws_id: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO scim_ids (application, kind, entra_id, aws_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (application, kind, entra_id)
             DO UPDATE SET aws_id = EXCLUDED.aws_id, resolved_at = now()",
            &[&application, &kind.as_str(), &entra_id, &aws_id],
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
