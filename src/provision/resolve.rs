//! The AWS ids of Entra users and groups: cached in Postgres (so the hot path is a single PATCH),
//! found by `displayName`/`userName`/`externalId`, or created from the event's attributes.

use deadpool_postgres::Object;
use serde_json::Value;

use super::user_attributes::snapshot;
use super::{Journal, LogIds, PendingId, ProvisionError, Provisioner, Target};
use crate::config::UserNameAttribute;
use crate::domain::Subject;
use crate::graph::users;
use crate::scim::mapping::{map_user, SourceUser};
use crate::scim::{ScimClient, ScimError, ScimGroup, ScimUser};
use crate::store::provisioning_log::{LogAction, Status};
use crate::store::scim_ids::{self, CachedPair, ObjectKind};

impl Provisioner {
    /// Both cached ids of a subject (read with the reconciliation's other pairs, else in one
    /// query), with what this reconciliation learnt since.
    pub(super) async fn cached(
        &self,
        db: &Object,
        subject: &Subject,
        journal: Option<&Journal>,
    ) -> Result<CachedPair, ProvisionError> {
        let read = journal.and_then(|j| j.read(subject));
        let mut pair = match read {
            Some(pair) => pair,
            None => {
                scim_ids::get_pair(
                    db,
                    &subject.application,
                    &subject.principal_id,
                    &subject.group_id,
                )
                .await?
            }
        };
        if let Some(journal) = journal {
            journal.overlay(subject, &mut pair);
        }
        Ok(pair)
    }

    /// Forgets the cached AWS ids of a subject's user and group (AWS answered 404 for one).
    pub(super) async fn forget(
        &self,
        db: &Object,
        subject: &Subject,
        journal: Option<&Journal>,
    ) -> Result<(), ProvisionError> {
        if let Some(journal) = journal {
            journal.forget(subject);
        }
        let app = &subject.application;
        scim_ids::forget(db, app, ObjectKind::User, &subject.principal_id).await?;
        scim_ids::forget(db, app, ObjectKind::Group, &subject.group_id).await?;
        Ok(())
    }

    /// The AWS id of the subject's group: cached, found, or (with `create`) created. `None` when
    /// AWS does not have it and `create` is false.
    pub(super) async fn group_id(
        &self,
        db: &Object,
        target: &Target,
        subject: &Subject,
        cached: Option<String>,
        create: bool,
        log: LogIds<'_>,
    ) -> Result<Option<String>, ProvisionError> {
        if let Some(id) = cached {
            return Ok(Some(id));
        }
        let client = &target.client;
        let found = match attribute(subject.group_attributes.as_ref(), "displayName") {
            Some(name) if create => Some(self.create_group(db, target, subject, name, log).await?),
            Some(name) => client.find_group_by_display_name(name).await?,
            None => match client.find_group_by_external_id(&subject.group_id).await? {
                Some(group) => Some(group),
                // The event does not name the group: Graph does, when configured.
                None if create => match self.group_name_from_graph(subject).await? {
                    Some(name) => Some(self.create_group(db, target, subject, &name, log).await?),
                    None => None,
                },
                None => None,
            },
        };
        match found {
            Some(group) => self
                .remember(db, log, subject, ObjectKind::Group, group.id, None)
                .await
                .map(Some),
            None if create => Err(ProvisionError::MissingAttributes(
                "group.displayName is needed to find or create the group in AWS (or [graph], to read it from Entra)".into(),
            )),
            None => Ok(None),
        }
    }

    /// Creates (or finds by displayName) the subject's group in AWS, and logs the step.
    async fn create_group(
        &self,
        db: &Object,
        target: &Target,
        subject: &Subject,
        name: &str,
        log: LogIds<'_>,
    ) -> Result<ScimGroup, ProvisionError> {
        let group = target
            .client
            .create_or_get_group(name, Some(&subject.group_id))
            .await?;
        log.append(
            db,
            subject,
            LogAction::CreateGroup,
            Status::Succeeded,
            None,
            "group created in AWS (or found there by displayName)",
        )
        .await?;
        Ok(group)
    }

    /// The group's display name in Entra; `None` without `[graph]` or when Graph does not know
    /// the group.
    async fn group_name_from_graph(
        &self,
        subject: &Subject,
    ) -> Result<Option<String>, ProvisionError> {
        let Some(graph) = &self.graph else {
            return Ok(None);
        };
        let group = graph.group(&subject.group_id).await?;
        if group.is_some() {
            tracing::info!(group_id = %subject.group_id,
                "the request does not name the group; its display name comes from Graph");
        }
        Ok(group.and_then(|g| g.display_name))
    }

    /// The AWS id of the subject's user: cached, found, or (with `create`) created from the
    /// event's attributes, and whether AWS created it just now (so it is in no group yet). `None`
    /// when AWS does not have the user and `create` is false.
    pub(super) async fn user_id(
        &self,
        db: &Object,
        target: &Target,
        subject: &Subject,
        cached: CachedUser,
        create: bool,
        log: LogIds<'_>,
    ) -> Result<Option<(String, bool)>, ProvisionError> {
        if let Some(id) = cached.id {
            if create {
                self.keep_user_current(db, target, subject, &id, cached.attributes, log)
                    .await?;
            }
            return Ok(Some((id, false)));
        }
        let client = &target.client;
        let source = source_user(target, subject);
        // The user and, when pimbridge asked AWS to create it, whether AWS created it now.
        let user: Option<(ScimUser, Option<bool>)> = match &source {
            Some(source) if create => match map_user(source, client.character_policy()) {
                Ok(user) => {
                    let (user, fresh) = client.create_user_fresh(&user).await?;
                    Some((user, Some(fresh)))
                }
                // Too little to create the user (an audit record names only the userName): use
                // the user if AWS already has it, else complete it from Graph, otherwise say
                // what is missing.
                Err(refused) => {
                    match find_user(client, subject, source.user_name.as_deref()).await? {
                        Some(user) => Some((user, None)),
                        None => Some(
                            self.create_from_graph(target, subject)
                                .await?
                                .map(|(user, fresh)| (user, Some(fresh)))
                                .ok_or(ScimError::from(refused))?,
                        ),
                    }
                }
            },
            Some(source) => find_user(client, subject, source.user_name.as_deref())
                .await?
                .map(|user| (user, None)),
            None => client
                .find_user_by_external_id(&subject.principal_id)
                .await?
                .map(|user| (user, None)),
        };
        let user = match user {
            None if create && source.is_none() => self
                .create_from_graph(target, subject)
                .await?
                .map(|(user, fresh)| (user, Some(fresh))),
            user => user,
        };
        match user {
            Some((user, created)) => {
                let known = snapshot(&user);
                let id = self
                    .remember(db, log, subject, ObjectKind::User, user.id, Some(&known))
                    .await?;
                if created.is_some() {
                    log.append(
                        db,
                        subject,
                        LogAction::CreateUser,
                        Status::Succeeded,
                        None,
                        "user created in AWS (or found there on a conflict)",
                    )
                    .await?;
                }
                if create {
                    self.keep_user_current(db, target, subject, &id, Some(known), log)
                        .await?;
                }
                Ok(Some((id, created == Some(true))))
            }
            None if create => Err(ProvisionError::MissingAttributes(
                "user.userName, user.givenName, user.familyName and user.displayName are needed to create the user in AWS".into(),
            )),
            None => Ok(None),
        }
    }

    /// Creates the subject's user from its event's attributes completed by Graph's, and whether
    /// AWS created it now; `None` without `[graph]` or when Graph does not know the user.
    async fn create_from_graph(
        &self,
        target: &Target,
        subject: &Subject,
    ) -> Result<Option<(ScimUser, bool)>, ProvisionError> {
        let Some(graph) = &self.graph else {
            return Ok(None);
        };
        let Some(found) = users::scim_attributes(graph, &subject.principal_id).await? else {
            return Ok(None);
        };
        tracing::info!("the event lacks user attributes AWS requires; completed from Graph");
        let completed = Subject {
            user_attributes: Some(users::complete(subject.user_attributes.as_ref(), &found)),
            ..subject.clone()
        };
        let Some(source) = source_user(target, &completed) else {
            return Ok(None);
        };
        let user = map_user(&source, target.client.character_policy()).map_err(ScimError::from)?;
        Ok(Some(target.client.create_user_fresh(&user).await?))
    }

    /// Caches the AWS id of the subject's user or group that AWS just returned (with a user's
    /// attributes as AWS holds them), through the journal when there is one, and returns it.
    async fn remember(
        &self,
        db: &Object,
        log: LogIds<'_>,
        subject: &Subject,
        kind: ObjectKind,
        aws_id: Option<String>,
        attributes: Option<&Value>,
    ) -> Result<String, ProvisionError> {
        let aws_id = aws_id.ok_or_else(|| {
            ProvisionError::Scim(ScimError::Protocol {
                method: "GET",
                path: format!("{kind:?}s"),
                reason: "AWS returned a resource without id".into(),
            })
        })?;
        let id = PendingId {
            application: subject.application.clone(),
            kind,
            entra_id: match kind {
                ObjectKind::User => subject.principal_id.clone(),
                ObjectKind::Group => subject.group_id.clone(),
            },
            aws_id: aws_id.clone(),
            attributes: attributes.cloned(),
        };
        match log.journal {
            Some(journal) => journal.remember(id),
            None => scim_ids::put_many(db, &[id.new_id()]).await?,
        }
        Ok(aws_id)
    }
}

/// The cached id of a user and what AWS holds for its attributes, where known.
#[derive(Debug, Clone, Default)]
pub(super) struct CachedUser {
    pub id: Option<String>,
    pub attributes: Option<Value>,
}

impl From<&CachedPair> for CachedUser {
    fn from(pair: &CachedPair) -> Self {
        Self {
            id: pair.user.clone(),
            attributes: pair.user_attributes.clone(),
        }
    }
}

/// The user as the event describes them, mapped per the application's userName source.
pub(super) fn source_user(target: &Target, subject: &Subject) -> Option<SourceUser> {
    let user_name_from = match target.user_name_attribute {
        UserNameAttribute::UserPrincipalName => "userName",
        UserNameAttribute::Mail => "email",
    };
    subject.user_attributes.as_ref().map(|attrs| SourceUser {
        object_id: subject.principal_id.clone(),
        user_name: attribute(Some(attrs), user_name_from).map(str::to_owned),
        given_name: attribute(Some(attrs), "givenName").map(str::to_owned),
        family_name: attribute(Some(attrs), "familyName").map(str::to_owned),
        display_name: attribute(Some(attrs), "displayName").map(str::to_owned),
        emails: attribute(Some(attrs), "email")
            .map(|e| vec![e.to_owned()])
            .unwrap_or_default(),
        ..SourceUser::default()
    })
}

/// The AWS user with this userName, or else with the Entra object id as externalId.
async fn find_user(
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

fn attribute<'a>(attributes: Option<&'a Value>, name: &str) -> Option<&'a str> {
    attributes?.get(name)?.as_str().filter(|s| !s.is_empty())
}

impl Provisioner {
    /// Provisions a group alone (Entra's PIM set-up step: the group exists in AWS before anyone
    /// activates, so that permission sets can be assigned to it), and logs the step. Returns its
    /// AWS id.
    pub async fn provision_group(
        &self,
        db: &Object,
        subject: &Subject,
    ) -> Result<String, ProvisionError> {
        let target = self.target(&subject.application)?;
        let cached = self.cached(db, subject, None).await?.group;
        if cached.is_some() {
            LogIds::default()
                .append(
                    db,
                    subject,
                    LogAction::CreateGroup,
                    Status::Succeeded,
                    None,
                    "the group is already in AWS: nothing to create",
                )
                .await?;
        }
        let group = self
            .group_id(db, target, subject, cached, true, LogIds::default())
            .await?
            .ok_or_else(|| {
                ProvisionError::MissingAttributes("group.displayName is needed".into())
            })?;
        Ok(group)
    }
}
