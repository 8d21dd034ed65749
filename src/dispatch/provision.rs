//! One membership change in AWS: resolve the AWS ids of the user and the group (cached in Postgres,
//! so the hot path is a single PATCH), then add or remove the member.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::Value;

use crate::config::UserNameAttribute;
use crate::domain::Action;
use crate::scim::mapping::{map_user, SourceUser};
use crate::scim::{ScimClient, ScimError};
use crate::store::jobs::ClaimedJob;
use crate::store::scim_ids::{self, ObjectKind};
use crate::store::StoreError;

/// Why a job could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// AWS (or the way to it) failed; `is_transient` tells whether to retry.
    #[error(transparent)]
    Scim(#[from] ScimError),
    /// The event carries too little to create the user or group, and AWS does not know it yet.
    #[error("missing attributes: {0}")]
    MissingAttributes(String),
    /// The id cache could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job names an application that is no longer configured.
    #[error("application `{0}` is not configured")]
    UnknownApplication(String),
}

impl ProvisionError {
    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Scim(e) => e.is_transient(),
            Self::Store(e) => e.is_transient(),
            Self::MissingAttributes(_) | Self::UnknownApplication(_) => false,
        }
    }

    /// How long AWS asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Scim(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// One application as the provisioner sees it: its SCIM client and its attribute mapping.
pub struct Target {
    pub client: ScimClient,
    pub user_name_attribute: UserNameAttribute,
}

/// Applies membership changes through each application's SCIM client.
pub struct Provisioner {
    pool: Pool,
    targets: BTreeMap<String, Target>,
}

impl Provisioner {
    pub fn new(pool: Pool, targets: BTreeMap<String, Target>) -> Self {
        Self { pool, targets }
    }

    /// Makes AWS reflect `job`. Adding an existing member or removing an absent one succeeds, so
    /// a job repeated after a crash does no harm.
    pub async fn apply(&self, job: &ClaimedJob) -> Result<(), ProvisionError> {
        let target = self
            .targets
            .get(&job.application)
            .ok_or_else(|| ProvisionError::UnknownApplication(job.application.clone()))?;
        match self.try_apply(target, job, true).await {
            // A cached id that AWS no longer knows: forget both ids and resolve them afresh.
            Err(ProvisionError::Scim(e)) if e.is_not_found() => {
                tracing::info!(job.id = job.id, application = %job.application,
                    "cached AWS id is stale; resolving again");
                let db = self.pool.get().await.map_err(StoreError::from)?;
                scim_ids::forget(&db, &job.application, ObjectKind::User, &job.principal_id)
                    .await?;
                scim_ids::forget(&db, &job.application, ObjectKind::Group, &job.group_id).await?;
                drop(db);
                self.try_apply(target, job, false).await
            }
            other => other,
        }
    }

    async fn try_apply(
        &self,
        target: &Target,
        job: &ClaimedJob,
        use_cache: bool,
    ) -> Result<(), ProvisionError> {
        let client = &target.client;
        // One query for both cached ids: on the hot path this is the only look-up before the PATCH.
        let cached = if use_cache {
            let db = self.pool.get().await.map_err(StoreError::from)?;
            scim_ids::get_pair(&db, &job.application, &job.principal_id, &job.group_id).await?
        } else {
            scim_ids::CachedPair::default()
        };
        match job.action {
            Action::Add => {
                let group = self.group_id(client, job, cached.group).await?;
                let user = self.user_id(target, job, cached.user, true).await?;
                client.add_members(&group, &[user]).await?;
            }
            Action::Remove => {
                let group = self.group_id(client, job, cached.group).await?;
                // A user AWS has never seen is not a member: nothing to remove.
                match self.user_id(target, job, cached.user, false).await {
                    Ok(user) => client.remove_members(&group, &[user]).await?,
                    Err(ProvisionError::MissingAttributes(_)) => {}
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(())
    }

    /// Caches the AWS id of a resource AWS just returned, and returns it.
    async fn remember(
        &self,
        job: &ClaimedJob,
        kind: ObjectKind,
        entra_id: &str,
        aws_id: Option<String>,
    ) -> Result<String, ProvisionError> {
        let aws_id = aws_id.ok_or_else(|| {
            ProvisionError::Scim(ScimError::Protocol {
                method: "GET",
                path: format!("{kind:?}s"),
                reason: "AWS returned a resource without id".into(),
            })
        })?;
        let db = self.pool.get().await.map_err(StoreError::from)?;
        scim_ids::put(&db, &job.application, kind, entra_id, &aws_id).await?;
        Ok(aws_id)
    }

    async fn group_id(
        &self,
        client: &ScimClient,
        job: &ClaimedJob,
        cached: Option<String>,
    ) -> Result<String, ProvisionError> {
        if let Some(id) = cached {
            return Ok(id);
        }
        let group = match attribute(job.group_attributes.as_ref(), "displayName") {
            Some(name) => {
                client
                    .create_or_get_group(name, Some(&job.group_id))
                    .await?
            }
            None => client
                .find_group_by_external_id(&job.group_id)
                .await?
                .ok_or_else(|| {
                    ProvisionError::MissingAttributes(
                        "group.displayName is needed to find or create the group in AWS".into(),
                    )
                })?,
        };
        self.remember(job, ObjectKind::Group, &job.group_id, group.id)
            .await
    }

    async fn user_id(
        &self,
        target: &Target,
        job: &ClaimedJob,
        cached: Option<String>,
        create: bool,
    ) -> Result<String, ProvisionError> {
        let client = &target.client;
        if let Some(id) = cached {
            return Ok(id);
        }
        let user_name_from = match target.user_name_attribute {
            UserNameAttribute::UserPrincipalName => "userName",
            UserNameAttribute::Mail => "email",
        };
        let source = job.user_attributes.as_ref().map(|attrs| SourceUser {
            object_id: job.principal_id.clone(),
            user_name: attribute(Some(attrs), user_name_from).map(str::to_owned),
            given_name: attribute(Some(attrs), "givenName").map(str::to_owned),
            family_name: attribute(Some(attrs), "familyName").map(str::to_owned),
            display_name: attribute(Some(attrs), "displayName").map(str::to_owned),
            emails: attribute(Some(attrs), "email")
                .map(|e| vec![e.to_owned()])
                .unwrap_or_default(),
            ..SourceUser::default()
        });
        let user = match source {
            Some(source) if create => {
                let user = map_user(&source, client.character_policy()).map_err(ScimError::from)?;
                client.create_user(&user).await?
            }
            Some(source) => match source.user_name.as_deref() {
                Some(name) => client.find_user_by_user_name(name).await?,
                None => client.find_user_by_external_id(&job.principal_id).await?,
            }
            .ok_or_else(|| ProvisionError::MissingAttributes("the user is not in AWS".into()))?,
            None => client
                .find_user_by_external_id(&job.principal_id)
                .await?
                .ok_or_else(|| {
                    ProvisionError::MissingAttributes(
                        "user.userName, user.givenName, user.familyName and user.displayName are needed to create the user in AWS".into(),
                    )
                })?,
        };
        self.remember(job, ObjectKind::User, &job.principal_id, user.id)
            .await
    }
}

fn attribute<'a>(attributes: Option<&'a Value>, name: &str) -> Option<&'a str> {
    attributes?.get(name)?.as_str().filter(|s| !s.is_empty())
}
