//! One membership change in AWS: resolve the AWS ids of the user and the group (cached in Postgres,
//! so the hot path is a single PATCH), then add or remove the member.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::Value;

use crate::config::UserNameAttribute;
use crate::domain::Action;
pub use crate::domain::Subject;
use crate::scim::mapping::{map_user, SourceUser};
use crate::scim::{ScimClient, ScimError, ScimUser};
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

    /// A short code for the provisioning log: `scim_<status>`, `scim_transport`, `invalid_user`,
    /// `missing_attributes`, `database` or `unknown_application`.
    pub fn code(&self) -> String {
        match self {
            Self::Scim(e) => scim_code(e),
            Self::MissingAttributes(_) => "missing_attributes".into(),
            Self::Store(_) => "database".into(),
            Self::UnknownApplication(_) => "unknown_application".into(),
        }
    }

    /// True when AWS refused our credentials (401/403): the application needs an operator.
    pub fn is_auth(&self) -> bool {
        match self {
            Self::Scim(ScimError::RetryBudgetExhausted { last, .. }) => last.is_auth(),
            Self::Scim(e) => e.is_auth(),
            _ => false,
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

    /// The SCIM target of an application.
    pub fn target(&self, application: &str) -> Result<&Target, ProvisionError> {
        self.targets
            .get(application)
            .ok_or_else(|| ProvisionError::UnknownApplication(application.to_owned()))
    }

    /// Makes AWS reflect one change. Adding an existing member or removing an absent one
    /// succeeds, so a change repeated after a crash does no harm.
    pub async fn apply(&self, action: Action, subject: &Subject) -> Result<(), ProvisionError> {
        let target = self.target(&subject.application)?;
        match self.try_apply(target, action, subject, true).await {
            // A cached id that AWS no longer knows: forget both ids and resolve them afresh.
            Err(ProvisionError::Scim(e)) if e.is_not_found() => {
                tracing::info!("cached AWS id is stale; resolving again");
                self.forget(subject).await?;
                self.try_apply(target, action, subject, false).await
            }
            other => other,
        }
    }

    /// Forgets the cached AWS ids of a subject's user and group (AWS answered 404 for one).
    pub async fn forget(&self, subject: &Subject) -> Result<(), ProvisionError> {
        let db = self.pool.get().await.map_err(StoreError::from)?;
        let app = &subject.application;
        scim_ids::forget(&db, app, ObjectKind::User, &subject.principal_id).await?;
        scim_ids::forget(&db, app, ObjectKind::Group, &subject.group_id).await?;
        Ok(())
    }

    /// The AWS id of the subject's group: cached, found, or (with `create`) created. `None` when
    /// AWS does not have it and `create` is false.
    pub async fn resolve_group(
        &self,
        subject: &Subject,
        create: bool,
    ) -> Result<Option<String>, ProvisionError> {
        let target = self.target(&subject.application)?;
        let cached = self.cached(subject).await?.group;
        let found = self.group_id(&target.client, subject, cached, create).await;
        if create {
            found.map(Some)
        } else {
            absent_as_none(found)
        }
    }

    /// The AWS id of the subject's user: cached, found, or (with `create`) created from the event's
    /// attributes. `None` when AWS does not have the user and `create` is false.
    pub async fn resolve_user(
        &self,
        subject: &Subject,
        create: bool,
    ) -> Result<Option<String>, ProvisionError> {
        let target = self.target(&subject.application)?;
        let cached = self.cached(subject).await?.user;
        let found = self.user_id(target, subject, cached, create).await;
        if create {
            found.map(Some)
        } else {
            absent_as_none(found)
        }
    }

    async fn cached(&self, subject: &Subject) -> Result<scim_ids::CachedPair, ProvisionError> {
        let db = self.pool.get().await.map_err(StoreError::from)?;
        Ok(scim_ids::get_pair(
            &db,
            &subject.application,
            &subject.principal_id,
            &subject.group_id,
        )
        .await?)
    }

    async fn try_apply(
        &self,
        target: &Target,
        action: Action,
        subject: &Subject,
        use_cache: bool,
    ) -> Result<(), ProvisionError> {
        let client = &target.client;
        // One query for both cached ids: on the hot path this is the only look-up before the PATCH.
        let cached = if use_cache {
            self.cached(subject).await?
        } else {
            scim_ids::CachedPair::default()
        };
        match action {
            Action::Add => {
                let group = self.group_id(client, subject, cached.group, true).await?;
                let user = self.user_id(target, subject, cached.user, true).await?;
                client.add_members(&group, &[user]).await?;
            }
            Action::Remove => {
                // A user or group AWS has never seen has no membership to remove.
                let group = self.group_id(client, subject, cached.group, false);
                let Some(group) = absent_as_none(group.await)? else {
                    return Ok(());
                };
                let user = self.user_id(target, subject, cached.user, false);
                if let Some(user) = absent_as_none(user.await)? {
                    client.remove_members(&group, &[user]).await?;
                }
            }
        }
        Ok(())
    }

    /// Caches the AWS id of a resource AWS just returned, and returns it.
    async fn remember(
        &self,
        subject: &Subject,
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
        scim_ids::put(&db, &subject.application, kind, entra_id, &aws_id).await?;
        Ok(aws_id)
    }

    async fn group_id(
        &self,
        client: &ScimClient,
        subject: &Subject,
        cached: Option<String>,
        create: bool,
    ) -> Result<String, ProvisionError> {
        if let Some(id) = cached {
            return Ok(id);
        }
        let found = match attribute(subject.group_attributes.as_ref(), "displayName") {
            Some(name) if create => Some(
                client
                    .create_or_get_group(name, Some(&subject.group_id))
                    .await?,
            ),
            Some(name) => client.find_group_by_display_name(name).await?,
            None => client.find_group_by_external_id(&subject.group_id).await?,
        };
        let group = found.ok_or_else(|| {
            ProvisionError::MissingAttributes(if create {
                "group.displayName is needed to find or create the group in AWS".into()
            } else {
                "the group is not in AWS".into()
            })
        })?;
        self.remember(subject, ObjectKind::Group, &subject.group_id, group.id)
            .await
    }

    async fn user_id(
        &self,
        target: &Target,
        subject: &Subject,
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
        let source = subject.user_attributes.as_ref().map(|attrs| SourceUser {
            object_id: subject.principal_id.clone(),
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
            Some(source) if create => match map_user(&source, client.character_policy()) {
                Ok(user) => client.create_user(&user).await?,
                // Too little to create the user (an audit record names only the userName): use
                // the user if AWS already has it, otherwise say what is missing.
                Err(refused) => self
                    .find_user(client, subject, source.user_name.as_deref())
                    .await?
                    .ok_or(ScimError::from(refused))?,
            },
            Some(source) => self
                .find_user(client, subject, source.user_name.as_deref())
                .await?
                .ok_or_else(|| ProvisionError::MissingAttributes("the user is not in AWS".into()))?,
            None => client
                .find_user_by_external_id(&subject.principal_id)
                .await?
                .ok_or_else(|| {
                    ProvisionError::MissingAttributes(
                        "user.userName, user.givenName, user.familyName and user.displayName are needed to create the user in AWS".into(),
                    )
                })?,
        };
        self.remember(subject, ObjectKind::User, &subject.principal_id, user.id)
            .await
    }

    /// The AWS user with this userName, or else with the Entra object id as externalId.
    async fn find_user(
        &self,
        client: &ScimClient,
        subject: &Subject,
        user_name: Option<&str>,
    ) -> Result<Option<ScimUser>, ScimError> {
        if let Some(name) = user_name {
            if let Some(user) = client.find_user_by_user_name(name).await? {
                return Ok(Some(user));
            }
        }
        client.find_user_by_external_id(&subject.principal_id).await
    }
}

fn scim_code(error: &ScimError) -> String {
    match error {
        ScimError::Validation(_) => "invalid_user".into(),
        ScimError::RetryBudgetExhausted { last, .. } => scim_code(last),
        ScimError::Unanswered(crate::outbound::SendError::Timeout { .. }) => "scim_timeout".into(),
        other => other
            .status()
            .map_or_else(|| "scim_transport".into(), |s| format!("scim_{s}")),
    }
}

/// Turns "AWS does not have it" into `None`; other errors stay errors.
fn absent_as_none(
    result: Result<String, ProvisionError>,
) -> Result<Option<String>, ProvisionError> {
    match result {
        Ok(id) => Ok(Some(id)),
        Err(ProvisionError::MissingAttributes(_)) => Ok(None),
        Err(other) => Err(other),
    }
}

fn attribute<'a>(attributes: Option<&'a Value>, name: &str) -> Option<&'a str> {
    attributes?.get(name)?.as_str().filter(|s| !s.is_empty())
}
