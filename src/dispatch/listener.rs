//! LISTEN/NOTIFY wake-ups for the dispatcher, on a dedicated connection that reconnects with a
//! capped backoff. Missing a notification only costs latency: the dispatcher also polls.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::secret::SecretString;
use crate::store::events::JOBS_CHANNEL;

/// First wait before reconnecting.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
/// Longest wait before reconnecting.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Wakes `wake` on every notification on the jobs channel until `shutdown`.
pub async fn listen(
    database_url: SecretString,
    tls: MakeRustlsConnect,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    // Failed connections since the last one that listened; sets the next wait.
    let mut failures = 0;
    loop {
        match tokio_postgres::connect(database_url.expose(), tls.clone()).await {
            Ok((client, mut connection)) => {
                let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
                let notified = wake.clone();
                tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    let _ = closed_tx.send(());
                });
                if client
                    .batch_execute(&format!("LISTEN {JOBS_CHANNEL}"))
                    .await
                    .is_ok()
                {
                    failures = 0;
                    // Anything committed while we were not listening is found by this poll.
                    wake.notify_one();
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = closed_rx => tracing::warn!("LISTEN connection lost; reconnecting"),
                    }
                }
            }
            Err(e) => tracing::debug!(error.message = %e, "LISTEN connection failed"),
        }
        failures += 1;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.step(failures)) => {}
        }
    }
}
