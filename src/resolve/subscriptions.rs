//! Graph subscriptions, created and renewed by pimbridge when `graph.notification_url` is set
//! (docs/webhooks.md): one per Entra group assigned to an application, on `/groups/{id}/members`, with
//! the configured `clientState` and lifecycle notifications to the same URL.
//!
//! One replica at a time (an advisory lock) checks every `graph.subscription_check_interval`:
//! a group without a subscription gets one (adopting one Graph already has for the same resource,
//! so a lost reply or a restart never doubles it); one with less than `renew_before` left,
//! or for which Graph asked for reauthorization, is renewed; one Graph no longer knows is created
//! again.

use std::time::Duration;

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::graph::{GraphClient, GraphError, NewSubscription, Subscription};
use crate::secret::SecretString;
use crate::store::graph_subscriptions::{self, Managed};
use crate::store::StoreError;

/// The change type Graph notifies for group membership.
const CHANGE_TYPE: &str = "updated";

/// Keeps one subscription per assigned group alive.
pub struct SubscriptionManager {
    pub pool: Pool,
    pub graph: GraphClient,
    /// The groups assigned to applications.
    pub groups: Vec<String>,
    pub notification_url: String,
    pub client_state: SecretString,
    pub lifetime: Duration,
    pub renew_before: Duration,
    pub interval: Duration,
}

/// Why a check could not finish.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubscriptionManager {
    /// Checks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.check().await {
                tracing::warn!(error.message = %crate::telemetry::error_chain(&e),
                    "cannot check the Graph subscriptions; will try again");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One check, if this replica gets the lock.
    pub async fn check(&self) -> Result<(), SubscriptionError> {
        let db = self.pool.get().await.map_err(StoreError::from)?;
        if !graph_subscriptions::try_lock(&db).await? {
            return Ok(());
        }
        let result = self.check_locked(&db).await;
        if let Err(e) = graph_subscriptions::unlock(&db).await {
            tracing::warn!(error.message = %e, "cannot release the subscription lock");
        }
        result
    }

    async fn check_locked(&self, db: &deadpool_postgres::Object) -> Result<(), SubscriptionError> {
        let managed = graph_subscriptions::all(db).await?;
        let now = OffsetDateTime::now_utc();
        let mut existing: Option<Vec<Subscription>> = None;
        for group in &self.groups {
            let current = managed.iter().find(|m| &m.group_id == group);
            let outcome = match current {
                Some(m) if !self.needs_renewal(m, now) => continue,
                Some(m) => self.renew(db, group, m).await,
                None => {
                    // Listed once per check, only when something is missing.
                    if existing.is_none() {
                        existing = Some(self.graph.list_subscriptions().await?);
                    }
                    let adopt = existing
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .find(|s| s.resource.eq_ignore_ascii_case(&resource(group)))
                        .cloned();
                    match adopt {
                        Some(s) => self.renew_adopted(db, group, &s).await,
                        None => self.create(db, group).await,
                    }
                }
            };
            if let Err(e) = outcome {
                let reason = crate::telemetry::error_chain(&e);
                tracing::warn!(group = %group, error.message = %reason, "Graph subscription not in place");
                graph_subscriptions::record_error(db, group, &reason).await?;
            }
        }
        Ok(())
    }

    fn needs_renewal(&self, m: &Managed, now: OffsetDateTime) -> bool {
        m.renew_requested || m.expires_at - now < self.renew_before
    }

    fn expiration(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.lifetime
    }

    async fn create(
        &self,
        db: &deadpool_postgres::Object,
        group: &str,
    ) -> Result<(), SubscriptionError> {
        let created = self
            .graph
            .create_subscription(&NewSubscription {
                change_type: CHANGE_TYPE.into(),
                notification_url: self.notification_url.clone(),
                lifecycle_notification_url: Some(self.notification_url.clone()),
                resource: resource(group),
                expiration: self.expiration(),
                client_state: self.client_state.clone(),
            })
            .await?;
        tracing::info!(group = %group, subscription = %created.id, "Graph subscription created");
        graph_subscriptions::save(
            db,
            group,
            &created.id,
            &created.resource,
            created.expiration,
        )
        .await?;
        Ok(())
    }

    async fn renew(
        &self,
        db: &deadpool_postgres::Object,
        group: &str,
        m: &Managed,
    ) -> Result<(), SubscriptionError> {
        match self
            .graph
            .renew_subscription(&m.subscription_id, self.expiration())
            .await
        {
            Ok(renewed) => {
                tracing::info!(group = %group, subscription = %renewed.id, "Graph subscription renewed");
                graph_subscriptions::save(
                    db,
                    group,
                    &renewed.id,
                    &resource(group),
                    renewed.expiration,
                )
                .await?;
                Ok(())
            }
            // Expired or deleted on Graph's side: start again.
            Err(GraphError::NotFound(_)) => self.create(db, group).await,
            Err(other) => Err(other.into()),
        }
    }

    /// Takes over a subscription Graph already has for the group (created before a lost reply or
    /// by an earlier installation) and renews it with our lifetime.
    async fn renew_adopted(
        &self,
        db: &deadpool_postgres::Object,
        group: &str,
        existing: &Subscription,
    ) -> Result<(), SubscriptionError> {
        let m = Managed {
            group_id: group.to_owned(),
            subscription_id: existing.id.clone(),
            expires_at: existing.expiration,
            renew_requested: true,
        };
        self.renew(db, group, &m).await
    }
}

/// The resource pimbridge subscribes to for a group.
fn resource(group: &str) -> String {
    format!("/groups/{group}/members")
}
