//! autoprov-server: the HTTP edge of autoprov.
//!
//! This crate turns HTTP requests into calls of the domain (`autoprov-core`) and the device
//! database (`autoprov-store`), and the answers back into HTTP responses:
//!
//! * [`update`]: the innovaphone update script (`/update.php`, `<prefix>/update.php`, the
//!   clean path), which runs [`autoprov_core::innovaphone::plan_update`];
//! * [`uploads`]: what devices PUT back (`mode=backup|query|vardump|upload`);
//! * [`fw`]: innovaphone firmware files under `SITE/fw/`;
//! * [`catalog`]: the firmware catalogue (`/firmware/<vendor>/<model>/<version>/<file>`, Range,
//!   ETag, bounded downloads, per-device progress);
//! * [`ports`]: [`SitePorts`], the engine's view of the outside world (snippet files, the
//!   master device in [`master`], templates and the external hook in [`hook`]);
//! * [`listen`]: binding the HTTP, HTTPS and MTLS listeners and running the server until
//!   shutdown; [`tls`]: server certificate (reloaded on change, self-signed on first use) and
//!   client certificate verification;
//! * [`pki`]: certificates, keys and CSRs, the built-in CA; [`rollout`]: a device's CSR and
//!   signed certificate files (operator actions, auto-sign policy);
//! * [`vendors`]: Snom, Yealink, Gigaset, Digium, Polycom, Cisco, Grandstream and Fanvil files
//!   at `/<file>` and `/<vendor>/<file>`, rendered with the site's templates
//!   ([`vendor_templates`]: the last good version of each keeps serving);
//! * [`admin`]: the operators' web UI under `/admin` (login, sessions, CSRF, audit log) and
//!   [`api`]: the REST API `/api/v1` with its OpenAPI document; both over
//!   [`admin::service`], which the CLI uses too;
//! * [`discovery`]: the zero-touch side channels of `serve`: SIP plug-and-play and the
//!   check-sync sender ([`sip`]), the mDNS announcement ([`mdns`]) and TFTP ([`tftp`]).
//!
//! Architecture invariant: only this crate knows HTTP. Decisions about devices stay in
//! `autoprov-core`; SQL stays in `autoprov-store`. Request input never panics the server and
//! never reaches the file system unchecked (see [`fsutil`]).

pub mod admin;
pub mod api;
pub mod app;
pub mod catalog;
pub mod discovery;
pub mod fsutil;
pub mod fw;
pub mod hook;
pub mod httpauth;
pub mod identify_memo;
pub mod inventory;
pub mod listen;
pub mod master;
pub mod mdns;
pub mod metrics;
pub mod pki;
pub mod ports;
pub mod reload;
pub mod render_cache;
pub mod respond;
pub mod rollout;
pub mod sendfile;
pub mod sip;
pub mod tftp;
pub mod tls;
pub mod update;
pub mod uploads;
pub mod vendor_templates;
pub mod vendors;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub use app::{AppState, ListenerInfo, MasterCache};
pub use listen::{bind, bind_listeners, serve, Bound, ConnInfo, ListenSpec, ListenerKind};
pub use ports::SitePorts;

/// Problems starting or running the server. Request-level problems never become a
/// `ServerError`; they are answered on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source} (is another process using the port, or is the address not on this machine?)")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("no listen address given: pass at least one address (e.g. 0.0.0.0:8080)")]
    NoListeners,
    #[error("listener {addr} failed: {source}")]
    Serve {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the TLS listeners: {0}")]
    Tls(String),
}

/// The application's routes. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so handlers see the peer address;
/// [`Bound::run`] does that and also tells handlers the local address of each listener.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .merge(admin::routes())
        .merge(api::routes())
        .fallback(dispatch)
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Answer one request of a listener: the router's own routes (health, admin UI, API) through
/// the router and its layers; every other path, which the router would hand to [`dispatch`]
/// as its fallback, straight to it (a device request does not pay for the route table, the
/// trace layer and the futures they wrap it in). Both ways answer the same.
pub(crate) async fn serve_request(app: &AppState, router: &Router, req: Request) -> Response {
    use tower::ServiceExt;
    let path = req.uri().path();
    if path == "/metrics" {
        return metrics::handle(app.clone(), req.headers()).await;
    }
    if path == "/healthz" || path.starts_with("/admin") || path.starts_with("/api") {
        return router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e: std::convert::Infallible| match e {});
    }
    if !tracing::enabled!(tracing::Level::DEBUG) {
        let resp = dispatch(State(app.clone()), req).await;
        if resp.status() == axum::http::StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(status = %resp.status(), "device request failed");
        }
        return resp;
    }
    let started = std::time::Instant::now();
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let resp = dispatch(State(app.clone()), req).await;
    tracing::debug!(%method, %uri, status = %resp.status(), latency = ?started.elapsed(), "device request");
    resp
}

/// Route by path shape: `<anything>/update.php` and the clean path run the update script,
/// `/firmware/<vendor>/<model>/<version>/<file>` serves the catalogue, `<anything>/fw/...`
/// serves innovaphone firmware, everything else goes to the other vendors' provisioning
/// ([`vendors`]: `/<file>`, `/<vendor>/<file>`), which answers 404 for what it does not know.
/// Each route's future is boxed: the layers around this handler move its future by value
/// several times per request, and unboxed it is as large as the largest route's state.
async fn dispatch(State(app): State<AppState>, req: Request) -> Response {
    use metrics::Route;
    app.note_request();
    let path = req.uri().path().to_string();
    let (route, resp) = if update::is_update_path(&path, &app.site().config.server.clean_path) {
        let answer = Box::pin(update::handle(app.clone(), req));
        (Route::Update, with_config_slot(&app, answer).await)
    } else if let Some(rest) = catalog::catalog_rest(&path) {
        let resp = Box::pin(catalog::serve(app.clone(), rest.to_string(), req, None)).await;
        (Route::Catalog, resp)
    } else if let Some(rest) = fw::firmware_rest(&path) {
        let resp = Box::pin(fw::serve(app.clone(), rest.to_string(), req)).await;
        (Route::Fw, resp)
    } else {
        let answer = Box::pin(vendors::handle(app.clone(), req));
        (Route::Vendor, with_config_slot(&app, answer).await)
    };
    app.metrics().answered(route, resp.status());
    resp
}

/// `answer`, holding a slot of the configuration budget until it is done; or, when every slot
/// is taken, 503 at once (`answer` is dropped unpolled).
async fn with_config_slot(
    app: &AppState,
    answer: impl std::future::Future<Output = Response>,
) -> Response {
    let Some(_slot) = app.try_config_slot() else {
        app.metrics().refused(metrics::Budget::Config);
        return overloaded(app.site().config.server.config_retry_after);
    };
    answer.await
}

/// 503 with `Retry-After`: the configuration budget is spent. Answered at once, with
/// `Connection: close` so a storm of phones does not keep idle connections open.
pub(crate) fn overloaded(retry_after: u64) -> Response {
    let mut r = respond::text(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "autoprov is busy, retry later\n".to_string(),
    );
    let h = r.headers_mut();
    h.insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(retry_after.max(1)),
    );
    h.insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}

/// `GET /healthz`: 200 `ok` when the device database answers, 503 otherwise.
async fn health(State(app): State<AppState>) -> Response {
    match app.store().health().await {
        Ok(()) => respond::text(axum::http::StatusCode::OK, "ok".to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            respond::text(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("device database unavailable: {e}"),
            )
        }
    }
}
