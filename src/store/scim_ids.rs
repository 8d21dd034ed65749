//! Cache of AWS resource ids by Entra object id, per application.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::types::ToSql;

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

/// Cached ids of several users and groups of one application, by Entra id.
#[derive(Debug, Clone, Default)]
pub struct CachedIds {
    /// AWS id and last known attributes of each cached user.
    pub users: HashMap<String, (String, Option<Value>)>,
    pub groups: HashMap<String, String>,
}

impl CachedIds {
    /// What is cached for one user and one group.
    pub fn pair(&self, user_entra_id: &str, group_entra_id: &str) -> CachedPair {
        let (user, user_attributes) = match self.users.get(user_entra_id) {
            Some((id, attributes)) => (Some(id.clone()), attributes.clone()),
            None => (None, None),
        };
        CachedPair {
            user,
            group: self.groups.get(group_entra_id).cloned(),
            user_attributes,
        }
    }
}

/// Reads the cached ids of one user and one group of an application in a single query.
pub async fn get_pair(
    client: &impl GenericClient,
    application: &str,
    user_entra_id: &str,
    group_entra_id: &str,
) -> Result<CachedPair, StoreError> {
    let ids = get_many(client, application, &[user_entra_id], &[group_entra_id]).await?;
    Ok(ids.pair(user_entra_id, group_entra_id))
}

/// Reads the cached ids of `users` and `groups` of an application in a single query.
pub async fn get_many(
    client: &impl GenericClient,
    application: &str,
    users: &[&str],
    groups: &[&str],
) -> Result<CachedIds, StoreError> {
    // One index look-up per id, each id once. The `LIMIT` keeps every look-up a probe of the
    // primary key: planned as one scan filtered by the whole array, on statistics taken while the
    // table was small, it compared every cached id with every asked one (160–240 ms a cycle
    // batch at 10,000 users).
    let users: BTreeSet<&str> = users.iter().copied().collect();
    let groups: BTreeSet<&str> = groups.iter().copied().collect();
    let (users, groups): (Vec<&str>, Vec<&str>) =
        (users.into_iter().collect(), groups.into_iter().collect());
    let rows = client
        .query(
            &client.prepare_cached(GET_MANY_SQL).await?,
            &[&application, &users, &groups],
        )
        .await?;
    let mut ids = CachedIds::default();
    for row in rows {
        let (entra_id, aws_id): (String, String) = (row.get(1), row.get(2));
        match row.get::<_, &str>(0) {
            "user" => {
                ids.users.insert(entra_id, (aws_id, row.get(3)));
            }
            _ => {
                ids.groups.insert(entra_id, aws_id);
            }
        }
    }
    Ok(ids)
}

const GET_MANY_SQL: &str = "SELECT 'user', u.id, s.aws_id, s.attributes
             FROM unnest($2::text[]) AS u(id)
             CROSS JOIN LATERAL (SELECT aws_id, attributes FROM scim_ids
                                 WHERE application = $1 AND kind = 'user' AND entra_id = u.id
                                 LIMIT 1) s
             UNION ALL
             SELECT 'group', g.id, s.aws_id, NULL::jsonb
             FROM unnest($3::text[]) AS g(id)
             CROSS JOIN LATERAL (SELECT aws_id FROM scim_ids
                                 WHERE application = $1 AND kind = 'group' AND entra_id = g.id
                                 LIMIT 1) s";

/// An AWS id to cache.
#[derive(Debug, Clone, Copy)]
pub struct NewId<'a> {
    pub application: &'a str,
    pub kind: ObjectKind,
    pub entra_id: &'a str,
    pub aws_id: &'a str,
    /// What AWS holds for a user's attributes, when known.
    pub attributes: Option<&'a Value>,
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
    let id = NewId {
        application,
        kind,
        entra_id,
        aws_id,
        attributes,
    };
    put_many(client, &[id]).await
}

/// [`put`] for several ids in one statement; each (application, kind, Entra id) at most once.
pub async fn put_many(client: &impl GenericClient, ids: &[NewId<'_>]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let columns = IdColumns::of(ids);
    client
        .execute(
            &client.prepare_cached(PUT_MANY_SQL).await?,
            &columns.params(),
        )
        .await?;
    Ok(())
}

/// The arguments of [`PUT_MANY_SQL`]: one array per column.
pub(crate) struct IdColumns<'a> {
    applications: Vec<&'a str>,
    kinds: Vec<&'a str>,
    entra_ids: Vec<&'a str>,
    aws_ids: Vec<&'a str>,
    attributes: Vec<Option<&'a Value>>,
}

impl<'a> IdColumns<'a> {
    pub(crate) fn of(ids: &[NewId<'a>]) -> Self {
        Self {
            applications: ids.iter().map(|i| i.application).collect(),
            kinds: ids.iter().map(|i| i.kind.as_str()).collect(),
            entra_ids: ids.iter().map(|i| i.entra_id).collect(),
            aws_ids: ids.iter().map(|i| i.aws_id).collect(),
            attributes: ids.iter().map(|i| i.attributes).collect(),
        }
    }

    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            &self.applications,
            &self.kinds,
            &self.entra_ids,
            &self.aws_ids,
            &self.attributes,
        ]
    }
}

/// Records ids (none: nothing) from arrays $1–$5 (see [`IdColumns`]).
pub(crate) const PUT_MANY_SQL: &str =
    "INSERT INTO scim_ids AS s (application, kind, entra_id, aws_id, attributes)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])
             ON CONFLICT (application, kind, entra_id)
             DO UPDATE SET aws_id = EXCLUDED.aws_id, resolved_at = now(),
                 attributes = CASE WHEN EXCLUDED.attributes IS NOT NULL THEN EXCLUDED.attributes
                                   WHEN s.aws_id = EXCLUDED.aws_id THEN s.attributes END";

/// The statements a reconciliation runs for the AWS ids (see `store::warm`).
pub(crate) fn hot_statements() -> Vec<String> {
    vec![GET_MANY_SQL.to_owned(), PUT_MANY_SQL.to_owned()]
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
