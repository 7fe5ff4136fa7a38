//! The innovaphone update-script route: `/update.php`, `<prefix>/update.php` (any depth) and
//! the clean path (`server.clean_path`), for GET, HEAD and POST alike.
//!
//! A request with `mode` in its query string goes to [`crate::uploads`] first, as the
//! reference does. Otherwise the HTTP request becomes an [`UpdateRequest`], the device state
//! is loaded (when state tracking is on and `sn` is given), the engine
//! ([`autoprov_core::innovaphone::plan_reply`], the engine without its explanations) runs with [`crate::SitePorts`] (on the
//! request's own task; again on a blocking thread when it needs a port that waits), and its
//! body is sent back. This module takes no decision about the
//! device: it translates and records (including the CSR files the engine wants removed, and
//! the auto-sign policy of [`crate::rollout::auto_sign`] before the engine looks at the files).

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;

use autoprov_core::innovaphone::{plan_reply, UpdateRequest};

use crate::app::{now, AppState};
use crate::respond::{self, ConnFacts};

/// Whether `path` is served by the update script.
pub fn is_update_path(path: &str, clean_path: &str) -> bool {
    if path == "/update.php" || path.ends_with("/update.php") {
        return true;
    }
    let clean = clean_path.trim_end_matches('/');
    !clean.is_empty() && path.trim_end_matches('/') == clean
}

pub async fn handle(app: AppState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_string();
    let args = UpdateRequest::parse_query(&query);
    if let Some(mode) = crate::uploads::mode_of(&args) {
        let mode = mode.to_string();
        return crate::uploads::handle(app, &mode, args, parts, body).await;
    }
    let req = to_update_request(&parts, args);
    run(app, req).await
}

/// The engine's view of an HTTP request (`https` and `server_port` come from the listener's
/// [`crate::ListenerInfo`], the peer from `ConnectInfo<SocketAddr>`, `X-Forwarded-For` and the
/// client certificate from [`crate::ConnInfo`]).
pub fn to_update_request(parts: &Parts, args: Vec<(String, String)>) -> UpdateRequest {
    let facts = ConnFacts::of(parts);
    UpdateRequest {
        args,
        https: facts.https,
        server_port: facts.local.map(|a| a.port()),
        host: facts.host,
        path: parts.uri.path().to_string(),
        peer_ip: facts.peer_ip,
        forwarded_for: facts.forwarded_for,
        client_cert: facts.client_cert,
    }
}

/// Run the engine for one request and record its result.
pub async fn run(app: AppState, req: UpdateRequest) -> Response {
    let now = now();
    let status_on = app.site().config.status.enabled;
    let sn = req.arg("sn").filter(|s| !s.is_empty()).map(str::to_string);
    let tracked = sn.as_deref().filter(|_| status_on);

    // Hold the device's lock from load to save so concurrent requests do not lose updates.
    let _guard = match tracked {
        Some(sn) => Some(app.lock_device(sn).await),
        None => None,
    };
    let state = match tracked {
        Some(sn) => match app.store().load(sn).await {
            Ok(s) => s,
            Err(e) => return unavailable(sn, &e),
        },
        None => None,
    };

    let runtime = tokio::runtime::Handle::current();
    let site = app.site_arc();
    let signed = auto_sign(&site, &req);
    // The engine is pure computation over cached files: it runs right here. Only when it
    // needs something that waits (a master device lookup over the network, a dynamic
    // snippet hook, a reverse DNS lookup) is the attempt dropped and the engine run again
    // on the blocking pool, where those may take their time.
    let mut inline_ports = app.ports(runtime.clone()).inline();
    let first = plan_reply(&site, &req, state, now, &mut inline_ports);
    let outcome = if !inline_ports.deferred() {
        Ok(first)
    } else {
        // Nothing was saved: the store still has the state the first attempt started from.
        let state = match tracked {
            Some(sn) => match app.store().load(sn).await {
                Ok(s) => s,
                Err(e) => return unavailable(sn, &e),
            },
            None => None,
        };
        let mut ports = app.ports(runtime);
        let engine_site = site.clone();
        let engine_req = req.clone();
        tokio::task::spawn_blocking(move || {
            plan_reply(&engine_site, &engine_req, state, now, &mut ports)
        })
        .await
    };
    let mut outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(sn = sn.as_deref().unwrap_or(""), error = %e, "update engine failed");
            return respond::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "# internal error while building the update script - exit\r\n".into(),
            );
        }
    };
    remove_files(&site, &outcome.remove_files);
    if let Some(msg) = signed {
        tracing::info!(sn = req.arg("sn").unwrap_or(""), "{msg}");
        if let Some(st) = outcome.state.as_mut() {
            st.add_msg(&format!("certificates: {msg}"), now);
        }
    }

    tracing::info!(
        sn = sn.as_deref().unwrap_or(""),
        r#type = req.arg("type").unwrap_or(""),
        phase = req.arg("phase").unwrap_or(""),
        peer = %req.peer_ip,
        error = outcome.error.as_deref().unwrap_or(""),
        "update script"
    );

    if let (Some(state), true) = (outcome.state.take(), status_on) {
        if let Err(e) = app.store().save_owned(state).await {
            tracing::error!(sn = sn.as_deref().unwrap_or(""), error = %e, "cannot save device state");
        }
    }
    drop(_guard);
    app.maybe_expire(now).await;
    respond::bytes(
        StatusCode::OK,
        autoprov_core::innovaphone::php::into_wire_bytes(outcome.body),
    )
}

/// 503 for a device whose state cannot be read.
fn unavailable(sn: &str, e: &autoprov_store::StoreError) -> Response {
    tracing::error!(sn, error = %e, "cannot load device state");
    respond::text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("# device database unavailable, try again later: {e} - exit\r\n"),
    )
}

/// Run the auto-sign policy for this request; the message to record when it did something.
fn auto_sign(site: &autoprov_core::Site, req: &UpdateRequest) -> Option<String> {
    let sn = req.arg("sn")?;
    let hwid = req.arg("hwid").unwrap_or("");
    let r = crate::rollout::auto_sign(
        site,
        sn,
        hwid,
        req.client_cert.as_ref(),
        req.forwarded_for.is_some(),
    )?;
    Some(r.unwrap_or_else(|e| {
        tracing::warn!(sn, error = %e, "auto-sign");
        e
    }))
}

/// Delete the files the engine is done with; only inside `customcerts.dir`.
fn remove_files(site: &autoprov_core::Site, files: &[String]) {
    let dir = site.config.customcerts.dir.as_str();
    let Some(certs) = (!dir.is_empty()).then(|| site.path(dir)).flatten() else {
        return;
    };
    for rel in files {
        match site.path(rel) {
            Some(p) if p.starts_with(&certs) && p != certs => match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!(file = %rel, "removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %rel, error = %e, "cannot remove"),
            },
            _ => tracing::warn!(file = %rel, "not removing a file outside customcerts.dir"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_facts() {
        use crate::app::ListenerInfo;
        use axum::extract::ConnectInfo;
        use std::net::SocketAddr;
        let mut req = axum::http::Request::builder()
            .uri("/mtls/upd/update.php?sn=1&type=IP232")
            .header("host", "srv.example:8080")
            .header("x-forwarded-for", "10.1.1.1, 10.2.2.2")
            .body(())
            .unwrap();
        let peer: SocketAddr = "[::ffff:10.0.0.5]:40000".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(ListenerInfo {
            local: "127.0.0.1:8080".parse().unwrap(),
            https: false,
        });
        let (mut parts, ()) = req.into_parts();
        let args = UpdateRequest::parse_query(parts.uri.query().unwrap());
        // Without knowing the peer is a trusted proxy, X-Forwarded-For is ignored.
        let r = to_update_request(&parts, args.clone());
        assert_eq!(r.forwarded_for, None);
        let cert = autoprov_core::innovaphone::ClientCert {
            subject_cn: "0090333000af".into(),
            issuer_cn: "CA".into(),
            verified: true,
            verify_error: None,
        };
        parts.extensions.insert(crate::ConnInfo {
            kind: crate::ListenerKind::Mtls,
            trusted_proxy: true,
            client_cert: Some(cert.clone()),
            peer_ip: None,
        });
        let r = to_update_request(&parts, args);
        assert_eq!(r.arg("type"), Some("IP232"));
        assert_eq!(r.host, "srv.example:8080");
        assert_eq!(r.path, "/mtls/upd/update.php");
        assert_eq!(r.server_port, Some(8080));
        assert_eq!(r.peer_ip, "10.0.0.5");
        assert_eq!(r.forwarded_for.as_deref(), Some("10.1.1.1, 10.2.2.2"));
        assert_eq!(r.client_cert, Some(cert));
        assert!(!r.https);

        // no Host header, no listener info: the authority, then defaults
        let req = axum::http::Request::builder()
            .uri("http://10.0.0.1:81/update.php")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let r = to_update_request(&parts, vec![]);
        assert_eq!(r.host, "10.0.0.1:81");
        assert_eq!(r.peer_ip, "0.0.0.0");
        assert_eq!(r.server_port, None);
    }

    #[test]
    fn paths() {
        let clean = "/innovaphone/update";
        for p in [
            "/update.php",
            "/upd/update.php",
            "/mtls/upd/update.php",
            "/innovaphone/update",
            "/innovaphone/update/",
        ] {
            assert!(is_update_path(p, clean), "{p}");
        }
        for p in ["/", "/update.phpx", "/fw/update", "/innovaphone/updates"] {
            assert!(!is_update_path(p, clean), "{p}");
        }
        assert!(!is_update_path("/", ""));
    }
}
