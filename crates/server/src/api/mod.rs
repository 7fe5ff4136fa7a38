//! The REST API `/api/v1` (issue 6): the device inventory for scripts, with the same service
//! layer as the web UI ([`crate::admin::service`]).
//!
//! Authentication: `Authorization: Bearer <token>` (tokens from `autoprov admin token`), or
//! the UI's session cookie; state-changing calls with a cookie also need the session's CSRF
//! token in `X-CSRF-Token` and a same-origin request. The OpenAPI 3 document is served at
//! `/api/v1/openapi.json` ([`openapi`]); every path in it is exercised by the e2e tests.

pub mod openapi;
pub mod site;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::admin::auth::{self, Operator};
use crate::admin::query;
use crate::admin::service::{self, ListQuery, ServiceError};
use crate::app::{now, AppState};

/// The API's routes (merged into [`crate::router`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/devices", get(list))
        .route("/api/v1/devices/{sn}", get(show).delete(forget))
        .route("/api/v1/devices/{sn}/backups", get(backups))
        .route("/api/v1/devices/{sn}/backups/{name}", get(backup))
        .route("/api/v1/devices/{sn}/diff", get(diff))
        .route(
            "/api/v1/devices/{sn}/certificate",
            get(certificate).put(upload_certificate),
        )
        .route("/api/v1/devices/{sn}/csr", get(csr))
        .route("/api/v1/devices/{sn}/preview", get(preview))
        .route("/api/v1/devices/{sn}/resync", axum::routing::post(resync))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/site/reload", axum::routing::post(site::reload))
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    let body = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    crate::admin::secure_headers(r.headers_mut());
    r
}

fn error(status: StatusCode, msg: &str) -> Response {
    json(
        status,
        &ErrorBody {
            error: msg.to_string(),
        },
    )
}

fn service_error(e: ServiceError) -> Response {
    let status = match e {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

/// The caller, or 401. Cookie sessions changing state must send the CSRF header.
async fn caller(
    app: &AppState,
    headers: &axum::http::HeaderMap,
    method: &Method,
) -> Result<Operator, Response> {
    let Some(op) = auth::operator(app, headers).await else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "log in or send Authorization: Bearer <token> (autoprov admin token)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"autoprov\""),
        );
        return Err(r);
    };
    if op.session.is_some() && method != Method::GET && method != Method::HEAD {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::same_origin(headers) || !auth::token_eq(sent, &op.csrf) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token for a cookie session",
            ));
        }
    }
    Ok(op)
}

macro_rules! caller {
    ($app:expr, $req:expr) => {
        match caller(&$app, $req.headers(), $req.method()).await {
            Ok(o) => o,
            Err(r) => return r,
        }
    };
}

/// String query parameter `k` (`None` when absent); given twice is an error.
fn str_param<'a>(q: &'a [(String, String)], k: &str) -> Result<Option<&'a str>, String> {
    let mut it = q.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match (it.next(), it.next()) {
        (v, None) => Ok(v),
        _ => Err(format!("{k} given more than once")),
    }
}

/// Integer query parameter `k` in `min..=max` (`d` when absent), else a message for 400.
fn int_param(q: &[(String, String)], k: &str, d: i64, min: i64, max: i64) -> Result<i64, String> {
    let all: Vec<&str> = q
        .iter()
        .filter(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .collect();
    let v = match all.as_slice() {
        [] => return Ok(d),
        [v] => *v,
        _ => return Err(format!("{k} given more than once")),
    };
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{k} must be an integer from {min} to {max}")),
    }
}

/// GET /api/v1/devices?filter=&sort=&offset=&limit=
async fn list(State(app): State<AppState>, req: Request) -> Response {
    caller!(app, req);
    let q = query(&req);
    // 0 would mean "all" to the service layer: not for the API (100k devices), so limit >= 1.
    let (offset, limit) = match (
        int_param(&q, "offset", 0, 0, openapi::MAX_OFFSET),
        int_param(&q, "limit", 100, 1, openapi::MAX_LIMIT),
    ) {
        (Ok(o), Ok(l)) => (o as usize, l as usize),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let (filter, sort) = match (str_param(&q, "filter"), str_param(&q, "sort")) {
        (Ok(f), Ok(s)) => (f.unwrap_or(""), s.unwrap_or("sn")),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if !openapi::sort_values().iter().any(|v| v == sort) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "cannot sort by '{sort}': use one of {} (leading - = descending)",
                service::SORT_COLUMNS.join(", ")
            ),
        );
    }
    let lq = ListQuery {
        filter: filter.to_string(),
        sort: sort.to_string(),
        offset,
        limit,
    };
    match service::list_devices_indexed(&app.site(), app.store(), app.inventory(), &lq, now()).await
    {
        Ok(p) => json(StatusCode::OK, &p),
        Err(e) => service_error(e),
    }
}

/// GET /api/v1/devices/{sn}
async fn show(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    caller!(app, req);
    match service::show_device(app.store(), &sn).await {
        Ok(d) => {
            #[derive(Serialize)]
            struct Show {
                summary: service::DeviceRow,
                state: autoprov_core::state::DeviceState,
            }
            // With the query `show` values (seed 003) as `summary.show`: [{title, value}].
            let summary = service::row_with_show(&app.site(), &d, now());
            json(StatusCode::OK, &Show { summary, state: d })
        }
        Err(e) => service_error(e),
    }
}

/// DELETE /api/v1/devices/{sn}
async fn forget(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    let op = caller!(app, req);
    match service::forget_device(app.store(), &sn).await {
        Ok(()) => {
            auth::audit(&app, &op.user, "forget-device", &sn, "api").await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => service_error(e),
    }
}

/// GET /api/v1/devices/{sn}/backups
async fn backups(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    caller!(app, req);
    let r = async {
        let d = service::show_device(app.store(), &sn).await?;
        service::list_backups(&app.site(), &d)
    }
    .await;
    match r {
        Ok(l) => json(StatusCode::OK, &l),
        Err(e) => service_error(e),
    }
}

/// GET /api/v1/devices/{sn}/backups/{name}
async fn backup(
    State(app): State<AppState>,
    Path((sn, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    caller!(app, req);
    let r = async {
        let d = service::show_device(app.store(), &sn).await?;
        service::read_backup(&app.site(), &d, &name)
    }
    .await;
    match r {
        Ok(b) => crate::admin::pages::download(b, &name, "text/plain; charset=utf-8"),
        Err(e) => service_error(e),
    }
}

/// GET /api/v1/devices/{sn}/diff?old=&new=
async fn diff(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    caller!(app, req);
    let q = query(&req);
    let (old, new) = match (str_param(&q, "old"), str_param(&q, "new")) {
        (Ok(o), Ok(n)) => (o.unwrap_or("").to_string(), n.unwrap_or("").to_string()),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let r = async {
        let d = service::show_device(app.store(), &sn).await?;
        service::diff_backups(&app.site(), &d, &old, &new)
    }
    .await;
    match r {
        Ok(l) => json(StatusCode::OK, &l),
        Err(e) => service_error(e),
    }
}

/// GET /api/v1/devices/{sn}/certificate
async fn certificate(
    State(app): State<AppState>,
    Path(sn): Path<String>,
    req: Request,
) -> Response {
    caller!(app, req);
    match service::show_device(app.store(), &sn).await {
        Ok(d) => json(StatusCode::OK, &service::cert_info(&app.site(), &d)),
        Err(e) => service_error(e),
    }
}

/// PUT /api/v1/devices/{sn}/certificate (body: the signed certificate, PEM or DER)
async fn upload_certificate(
    State(app): State<AppState>,
    Path(sn): Path<String>,
    req: Request,
) -> Response {
    let op = caller!(app, req);
    if let Err(e) = service::show_device(app.store(), &sn).await {
        return service_error(e);
    }
    let Some(body) = crate::admin::body_text(req.into_body()).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "certificate larger than 1 MiB",
        );
    };
    match service::upload_signed(&app.site(), &sn, &body) {
        Ok(cn) => {
            auth::audit(&app, &op.user, "upload-certificate", &sn, &cn).await;
            json(StatusCode::OK, &serde_json::json!({ "installed": cn }))
        }
        Err(e) => service_error(e),
    }
}

/// GET /api/v1/devices/{sn}/csr
async fn csr(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    caller!(app, req);
    if let Err(e) = service::show_device(app.store(), &sn).await {
        return service_error(e);
    }
    match service::csr_pem(&app.site(), &sn) {
        Ok(p) => crate::admin::pages::download(
            p.into_bytes(),
            &format!("{sn}-request.pem"),
            "application/x-pem-file",
        ),
        Err(e) => service_error(e),
    }
}

/// GET /api/v1/devices/{sn}/preview
async fn preview(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    caller!(app, req);
    match crate::admin::pages::preview_outcome(&app, &sn).await {
        Ok(o) => json(
            StatusCode::OK,
            &serde_json::json!({ "body": o.body, "notes": o.notes, "error": o.error }),
        ),
        Err(e) => service_error(e),
    }
}

/// POST /api/v1/devices/{sn}/resync
async fn resync(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    let op = caller!(app, req);
    match service::resync_device(&app, &sn).await {
        Ok(outcome) => {
            auth::audit(&app, &op.user, "resync", &sn, &outcome).await;
            json(StatusCode::OK, &serde_json::json!({ "outcome": outcome }))
        }
        Err(e) => service_error(e),
    }
}

/// GET /api/v1/audit?limit=
async fn audit(State(app): State<AppState>, req: Request) -> Response {
    caller!(app, req);
    let q = query(&req);
    let limit = match int_param(&q, "limit", 100, 1, openapi::MAX_LIMIT) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match app.store().audit_recent(limit).await {
        Ok(l) => {
            let v: Vec<_> = l
                .into_iter()
                .map(|e| {
                    serde_json::json!({"id": e.id, "time": e.time, "user": e.user,
                        "action": e.action, "target": e.target, "detail": e.detail})
                })
                .collect();
            json(StatusCode::OK, &v)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
