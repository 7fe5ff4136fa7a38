//! The operators' web UI under `/admin` (issue 6): login, device list with the seed's filter,
//! device page (identity, messages, scripts, backups with diff and download, certificate files,
//! "preview as this device"), fleet overview with SVG charts, site view, audit log.
//!
//! Pages are server-rendered, hand-built HTML with every value escaped by [`esc`]. Every page
//! needs a logged-in operator ([`auth`]); every form carries the session's CSRF token and is
//! also checked by `Origin`/`Sec-Fetch-Site`. Operator actions go to the audit log. The data
//! comes from [`service`], shared with the REST API and the CLI.

pub mod auth;
pub mod pages;
pub mod service;
pub mod site_view;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::{now, AppState};
use auth::Operator;

/// The UI's routes (merged into [`crate::router`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(pages::home))
        .route("/admin/", get(pages::home))
        .route("/admin/login", get(pages::login_form).post(pages::login))
        .route("/admin/logout", post(pages::logout))
        .route("/admin/devices", get(pages::devices))
        .route("/admin/devices/{sn}", get(pages::device))
        .route("/admin/devices/{sn}/forget", post(pages::forget))
        .route("/admin/devices/{sn}/resync", post(pages::resync))
        .route(
            "/admin/devices/{sn}/backups/{name}",
            get(pages::backup_download),
        )
        .route("/admin/devices/{sn}/diff", get(pages::diff))
        .route("/admin/devices/{sn}/csr", get(pages::csr))
        .route("/admin/devices/{sn}/certificate", post(pages::upload_cert))
        .route("/admin/devices/{sn}/preview", get(pages::preview))
        .route("/admin/overview", get(pages::overview))
        .route("/admin/site", get(pages::site))
        .route("/admin/site/reload", post(site_view::reload))
        .route("/admin/audit", get(pages::audit_page))
}

/// HTML-escape `s`.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encode a path segment or query value.
pub fn enc(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Decode an `application/x-www-form-urlencoded` string.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let d = |x: &str| {
                percent_encoding::percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect()
}

/// Value of `key` in decoded form/query pairs.
pub fn field<'a>(f: &'a [(String, String)], key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Query pairs of a request.
pub fn query(req: &Request) -> Vec<(String, String)> {
    parse_form(req.uri().query().unwrap_or(""))
}

/// Read a request body up to 1 MiB.
pub async fn body_text(body: Body) -> Option<Vec<u8>> {
    axum::body::to_bytes(body, 1 << 20)
        .await
        .ok()
        .map(|b| b.to_vec())
}

/// A page with the common layout (nav, logout form with CSRF token).
pub fn layout(op: &Operator, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t} - autoprov</title>\
         <style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}tr.missing td{{color:#a00}}\
         .add{{background:#dfd}}.del{{background:#fdd}}nav a{{margin-right:1em}}pre{{background:#f6f6f6;padding:4px}}</style>\
         </head><body><nav><a href=\"/admin/devices\">Devices</a><a href=\"/admin/overview\">Overview</a>\
         <a href=\"/admin/site\">Site</a><a href=\"/admin/audit\">Audit</a>\
         <form method=\"post\" action=\"/admin/logout\" style=\"display:inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{c}\"><button id=\"logout\">Log out {u}</button></form></nav>\
         <h1>{t}</h1>{body}</body></html>",
        t = esc(title),
        c = esc(&op.csrf),
        u = esc(&op.user),
    );
    html_response(StatusCode::OK, html)
}

/// An HTML response that must not be cached or framed.
pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

/// Headers every operator response carries.
pub fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
}

/// Redirect (303) to `to`.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut());
    r
}

/// The logged-in operator, or a redirect to the login page.
pub async fn require(
    app: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Operator, Response> {
    match auth::operator(app, headers).await {
        Some(op) if op.session.is_some() => Ok(op),
        _ => Err(redirect("/admin/login")),
    }
}

/// For POST forms: the operator, a matching CSRF token and a same-origin request; else 403.
pub async fn require_form(
    app: &AppState,
    req: Request,
) -> Result<(Operator, Vec<(String, String)>, bool), Response> {
    let https = auth::is_https(&req);
    let headers = req.headers().clone();
    let op = require(app, &headers).await?;
    if !auth::same_origin(req.headers()) {
        return Err(forbidden("cross-site request refused"));
    }
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(body) = body_text(req.into_body()).await else {
        return Err(forbidden("request body too large"));
    };
    if !ctype.starts_with("application/x-www-form-urlencoded") {
        return Err(forbidden("expected a form"));
    }
    let form = parse_form(&String::from_utf8_lossy(&body));
    if !auth::token_eq(field(&form, "csrf").unwrap_or(""), &op.csrf) {
        return Err(forbidden(
            "missing or wrong CSRF token: reload the page and try again",
        ));
    }
    Ok((op, form, https))
}

/// 403 with a short explanation.
pub fn forbidden(msg: &str) -> Response {
    html_response(
        StatusCode::FORBIDDEN,
        format!("<!DOCTYPE html><p>Forbidden: {}</p>", esc(msg)),
    )
}

/// Format epoch seconds as UTC (`-` for 0).
pub fn time(t: i64) -> String {
    if t <= 0 {
        return "-".into();
    }
    crate::rollout::format_time(t)
}

/// "3h ago" style age of `t`.
pub fn ago(t: i64) -> String {
    if t <= 0 {
        return "never".into();
    }
    autoprov_core::innovaphone::php::since(now(), t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::ListenerInfo;
    use tower::ServiceExt;

    async fn app() -> AppState {
        let site = autoprov_core::Site {
            dir: std::env::temp_dir().join("autoprov-admin-https-test"),
            config: Default::default(),
        };
        let store = autoprov_store::Store::open_memory().await.unwrap();
        auth::set_password(&store, "admin", "secret password")
            .await
            .unwrap();
        AppState::new(site, store)
    }

    fn https(mut req: Request) -> Request {
        req.extensions_mut().insert(ListenerInfo {
            local: "127.0.0.1:443".parse().unwrap(),
            https: true,
        });
        req
    }

    /// Over an HTTPS listener both cookies carry `Secure` besides HttpOnly and SameSite=Strict.
    #[tokio::test]
    async fn cookies_are_secure_over_https() {
        let state = app().await;
        let router = crate::router(state);
        let r = router
            .clone()
            .oneshot(https(
                Request::get("/admin/login").body(Body::empty()).unwrap(),
            ))
            .await
            .unwrap();
        let c = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(c.contains("; Secure") && c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        let token = c
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string();
        let r = router
            .oneshot(https(
                Request::post("/admin/login")
                    .header(header::COOKIE, format!("{}={token}", auth::LOGIN_COOKIE))
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!(
                        "csrf={token}&user=admin&password=secret+password"
                    )))
                    .unwrap(),
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let session = r
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with(auth::SESSION_COOKIE))
            .unwrap();
        assert!(session.contains("; Secure"), "{session}");
        assert!(session.contains("HttpOnly"), "{session}");
        assert!(session.contains("SameSite=Strict"), "{session}");
    }
}
