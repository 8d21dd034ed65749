//! The last line of defence: a handler that panics is answered with 500 and a JSON body, as any
//! other server error, instead of a dropped connection, and counted
//! (`pimbridge_handler_panics_total`). Nothing a caller sends should reach a panic (parsers and
//! `intake::validate` refuse it first); this makes a missed case visible rather than silent.

use std::panic::AssertUnwindSafe;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use futures_util::FutureExt;

use crate::error::ApiError;
use crate::state::AppState;

/// Middleware: turns a panic in the rest of the chain into 500 `internal_error`.
pub async fn catch_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // The request cannot be kept for the answer (routing needs it unshared), so the panic
    // becomes an error, which actix answers with the error's own response.
    let path = req.path().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(result) => result,
        Err(_) => {
            // The panic hook has printed the message; the path tells which handler it was.
            tracing::error!(path = %path, "a request handler panicked");
            if let Some(state) = state {
                state.metrics.handler_panics.inc();
            }
            Err(ApiError::Internal.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, HttpServer};

    #[actix_web::test]
    async fn a_panicking_handler_is_answered_with_500_json_over_http() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(|| {
            App::new()
                .wrap(from_fn(catch_panics))
                .route(
                    "/boom",
                    web::get().to(|| async {
                        if std::hint::black_box(true) {
                            panic!("handler bug");
                        }
                        HttpResponse::Ok().finish()
                    }),
                )
                .route("/fine", web::get().to(HttpResponse::Ok))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let http = reqwest::Client::new();

        let response = http
            .get(format!("http://127.0.0.1:{port}/boom"))
            .send()
            .await
            .expect("an answer, not a dropped connection");
        assert_eq!(response.status(), 500);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "internal_error");

        let response = http
            .get(format!("http://127.0.0.1:{port}/fine"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the server still serves");
        handle.stop(false).await;
    }
}
