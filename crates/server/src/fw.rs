//! Firmware files: `GET`/`HEAD` on `/fw/...` and `<prefix>/fw/...`, served from `SITE/fw/`.
//!
//! tower-http's `ServeDir` does the file work: Range requests, `Last-Modified`, conditional
//! requests, and refusal of `..` and absolute components. This module only maps the URL onto
//! the firmware directory; it never serves anything outside it.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tower_http::services::ServeDir;

use crate::app::AppState;
use crate::respond;

/// For `/fw/<rest>` or `<prefix>/fw/<rest>`: `<rest>` (still percent-encoded).
pub fn firmware_rest(path: &str) -> Option<&str> {
    if let Some(rest) = path.strip_prefix("/fw/") {
        return Some(rest);
    }
    path.find("/fw/").map(|i| &path[i + 4..])
}

/// Serve `SITE/fw/<rest>`.
pub async fn serve(app: AppState, rest: String, req: Request) -> Response {
    if rest.split('/').any(|seg| seg == ".." || seg.contains('\\'))
        || rest.to_ascii_lowercase().contains("%2e%2e")
    {
        return respond::text(
            StatusCode::BAD_REQUEST,
            "# firmware path must not leave the firmware folder\r\n".into(),
        );
    }
    let (mut parts, _body) = req.into_parts();
    let pq = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    parts.uri = match pq.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => {
            return respond::text(
                StatusCode::BAD_REQUEST,
                "# malformed firmware path\r\n".into(),
            )
        }
    };
    let req = Request::from_parts(parts, Body::empty());
    let mut dir = ServeDir::new(app.site_dir().join("fw")).append_index_html_on_directories(false);
    match dir.try_call(req).await {
        Ok(resp) => {
            if resp.status() == StatusCode::NOT_FOUND {
                tracing::info!(path = %pq, "firmware file not found");
            }
            resp.map(Body::new).into_response()
        }
        Err(e) => {
            tracing::warn!(path = %pq, error = %e, "cannot serve firmware file");
            respond::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("# cannot read firmware file: {e}\r\n"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(
            firmware_rest("/fw/137640/ip232.bin"),
            Some("137640/ip232.bin")
        );
        assert_eq!(
            firmware_rest("/mtls/upd/fw/137640/ip232.bin"),
            Some("137640/ip232.bin")
        );
        assert_eq!(firmware_rest("/update.php"), None);
        assert_eq!(firmware_rest("/firmware/x"), None);
    }
}
