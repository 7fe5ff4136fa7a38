//! Firmware files: `GET`/`HEAD` on `/fw/...` and `<prefix>/fw/...`, served from `SITE/fw/`.
//!
//! The URL is mapped onto the firmware directory (percent-decoded segment by segment; `..`,
//! `.`, backslashes and NULs are refused, so nothing outside the folder is ever served). The
//! transfer itself is the catalogue's ([`crate::catalog::transfer`]): `ETag` (mtime and
//! size, as nginx makes it) and `Last-Modified`, conditional requests, byte ranges, a
//! download slot of `[firmware] max_downloads` held until the last byte (503 with
//! `Retry-After` when all are taken, so downloads never starve configuration requests). On
//! plain HTTP the bytes go out with `sendfile` from a mapping this process never reads;
//! on TLS they are read in chunks (an operator may overwrite a file in place, which a mapping
//! that is read would not survive).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::app::{AppState, ListenerInfo};
use crate::catalog::transfer::{self, Entity, Plan, Source};
use crate::respond;

/// For `/fw/<rest>` or `<prefix>/fw/<rest>`: `<rest>` (still percent-encoded).
pub fn firmware_rest(path: &str) -> Option<&str> {
    if let Some(rest) = path.strip_prefix("/fw/") {
        return Some(rest);
    }
    path.find("/fw/").map(|i| &path[i + 4..])
}

/// `rest` decoded into a path below the firmware folder, or `None` when a segment is empty,
/// `.`, `..`, or holds a slash, backslash or NUL once decoded.
fn relative_path(rest: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for seg in rest.split('/') {
        let seg = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .ok()?;
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains(['/', '\\', '\0']) {
            return None;
        }
        out.push(seg.as_ref());
    }
    Some(out)
}

/// Serve `SITE/fw/<rest>`.
pub async fn serve(app: AppState, rest: String, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    if let Some(refused) = transfer::method_refused(&parts.method) {
        return refused;
    }
    let head = parts.method == Method::HEAD;
    let Some(rel) = relative_path(&rest) else {
        return respond::text(
            StatusCode::BAD_REQUEST,
            "# firmware path must name a file inside the firmware folder\r\n".into(),
        );
    };
    let path = app.site_dir().join("fw").join(&rel);
    let opened = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let meta = file.metadata()?;
        Ok::<_, std::io::Error>((file, meta))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let (file, meta) = match opened {
        Ok((f, m)) if m.is_file() => (f, m),
        Ok(_) => return not_found(&rest),
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound)
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return not_found(&rest)
        }
        Err(e) => {
            tracing::warn!(path = %rest, error = %e, "cannot serve firmware file");
            return respond::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("# cannot read firmware file: {e}\r\n"),
            );
        }
    };
    let size = meta.len();
    let modified = crate::fsutil::mtime_secs(&meta);
    let etag = format!("\"{modified:x}-{size:x}\"");
    let entity = Entity {
        etag: &etag,
        modified,
        size,
        cache_control: "no-cache",
        boundary: etag.trim_matches('"'),
    };
    let (builder, body_parts) = match transfer::plan(&parts.headers, &entity) {
        Plan::Done(r) => return r,
        Plan::Send(b, p) => (b, p),
    };
    if head {
        return transfer::finish(builder, Body::empty());
    }
    let permit = match app.firmware().download_slot(parts.uri.path()) {
        Ok(p) => p,
        Err(busy) => {
            app.metrics().refused(crate::metrics::Budget::Firmware);
            return *busy;
        }
    };
    let tls = parts
        .extensions
        .get::<ListenerInfo>()
        .is_none_or(|l| l.https);
    let source = if tls || size == 0 {
        Source::File(Arc::new(file))
    } else {
        match crate::sendfile::MappedImage::open(file) {
            Ok(map) => Source::Mapped(map),
            Err(e) => {
                tracing::warn!(path = %rest, error = %e, "cannot map firmware file");
                return respond::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("# cannot read firmware file: {e}\r\n"),
                );
            }
        }
    };
    transfer::finish(builder, transfer::file_body(source, body_parts, permit))
}

fn not_found(rest: &str) -> Response {
    tracing::info!(path = %rest, "firmware file not found");
    respond::text(
        StatusCode::NOT_FOUND,
        format!("# no such firmware file: fw/{rest}\r\n"),
    )
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

    #[test]
    fn paths_stay_inside() {
        assert_eq!(
            relative_path("137640/ip232.bin"),
            Some(PathBuf::from("137640/ip232.bin"))
        );
        assert_eq!(
            relative_path("a%20b/c.bin"),
            Some(PathBuf::from("a b/c.bin"))
        );
        for bad in [
            "../autoprov.toml",
            "%2e%2e/autoprov.toml",
            "%2E%2E/x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a%2fb",
            "a%5cb",
            "a%00b",
            "%ff",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }
}
