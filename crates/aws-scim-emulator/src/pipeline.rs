//! Middleware around the SCIM routes: request id and log, faults, User-Agent and bearer checks,
//! and the lost-reply connection drop.

use std::any::Any;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage as _, HttpRequest, ResponseError as _};
use subtle::ConstantTimeEq as _;

use super::clock;
use super::errors::{ApiError, REQUEST_ID};
use super::log::LoggedRequest;
use super::settings::EmulatorSettings;
use super::{Shared, CONTROL_PREFIX};

/// The injected fault that shaped a reply (request extension).
pub(crate) struct FaultTag(pub &'static str);

/// The request body, for the request log (request extension).
pub(crate) struct LoggedBody(pub serde_json::Value);

/// Resources younger than this are invisible to by-id operations (request extension).
pub(crate) struct VisibilityDelay(pub Duration);

/// A duplicate of the connection's socket, used to drop the connection (connection data).
#[cfg(unix)]
pub(crate) struct ConnSocket(std::net::TcpStream);

/// `HttpServer::on_connect` hook: keeps a handle able to shut the connection down.
pub(crate) fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
                ext.insert(ConnSocket(std::net::TcpStream::from(fd)));
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (conn, ext);
    }
}

/// Drops the connection of `req` without writing a response.
async fn drop_connection(req: &HttpRequest) {
    #[cfg(unix)]
    if let Some(socket) = req.conn_data::<ConnSocket>() {
        let _ = socket.0.shutdown(std::net::Shutdown::Both);
        return;
    }
    // No socket handle: hold the reply back long enough for any client timeout.
    let _ = req;
    actix_web::rt::time::sleep(Duration::from_secs(3600)).await;
}

pub(crate) fn is_control_path(path: &str) -> bool {
    path == CONTROL_PREFIX || path.starts_with(&format!("{CONTROL_PREFIX}/"))
}

/// Outermost middleware: request id, `x-amzn-RequestId`, request log.
pub(crate) async fn observe<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    if is_control_path(req.path()) {
        return next.call(req).await;
    }
    let shared = req.app_data::<web::Data<Shared>>().cloned();
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let query = req.query_string().to_owned();
    let at = clock::now();
    let started = Instant::now();

    let result = REQUEST_ID.scope(request_id.clone(), next.call(req)).await;

    let (status, fault, body) = match &result {
        Ok(res) => {
            let ext = res.request().extensions();
            (
                res.status().as_u16(),
                ext.get::<FaultTag>().map(|t| t.0.to_owned()),
                ext.get::<LoggedBody>().map(|b| b.0.clone()),
            )
        }
        Err(e) => (e.as_response_error().status_code().as_u16(), None, None),
    };
    if let Some(shared) = shared {
        tracing::debug!(%method, %path, status, "scim request");
        shared.record(LoggedRequest {
            method,
            path,
            query,
            status,
            at: clock::log_timestamp(at),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            request_id: request_id.clone(),
            fault,
            body,
        });
    }
    let mut res = result?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-amzn-requestid"), value);
    }
    Ok(res)
}

fn reject<B>(req: ServiceRequest, err: &ApiError) -> ServiceResponse<EitherBody<B>> {
    req.into_response(err.error_response())
        .map_into_right_body()
}

fn authorized(req: &ServiceRequest, settings: &EmulatorSettings) -> bool {
    let tenant = req.path().trim_start_matches('/').split('/').next();
    let tenant_ok = tenant == Some(settings.tenant_id.as_str());
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let token_ok = token.is_some_and(|t| {
        settings.tokens.iter().fold(false, |ok, known| {
            ok | bool::from(known.as_bytes().ct_eq(t.as_bytes()))
        })
    });
    tenant_ok && token_ok
}

/// Middleware of the SCIM scope: faults, User-Agent, authentication, lost reply.
pub(crate) async fn scim_gate<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let Some(shared) = req.app_data::<web::Data<Shared>>().cloned() else {
        return Ok(reject(
            req,
            &ApiError::injected(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
        ));
    };
    let decision = shared.decide(req.method().as_str(), req.path());
    if !decision.latency.is_zero() {
        actix_web::rt::time::sleep(decision.latency).await;
    }
    if let Some((err, tag)) = decision.reject {
        req.extensions_mut().insert(FaultTag(tag));
        return Ok(reject(req, &err));
    }
    let settings = shared.settings();
    let has_agent = req
        .headers()
        .get(header::USER_AGENT)
        .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace));
    if settings.require_user_agent && !has_agent {
        return Ok(reject(
            req,
            &ApiError::forbidden("Requests without a User-Agent header are not accepted."),
        ));
    }
    if !authorized(&req, &settings) {
        return Ok(reject(req, &ApiError::unauthorized()));
    }
    if let Some(delay) = decision.visibility_delay {
        req.extensions_mut().insert(VisibilityDelay(delay));
    }
    let res = next.call(req).await?;
    if decision.lost_reply {
        res.request().extensions_mut().insert(FaultTag("lostReply"));
        drop_connection(res.request()).await;
    }
    Ok(res.map_into_left_body())
}
