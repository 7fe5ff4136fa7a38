//! Provisioning files of the vendors other than innovaphone, at `/<file name>` and
//! `/<vendor>/<file name>` (any directory depth; the directory right above the file may name
//! the vendor).
//!
//! For one request: HTTP facts become a [`DeviceRequest`]; the inventory is asked what it knows
//! about the MAC the request probably belongs to ([`vendors::mac_hint`]); the vendor and file
//! are identified ([`vendors::identify`]); the settings are resolved, the firmware target is
//! taken from the catalogue ([`crate::catalog::Firmware`]) and the file is rendered with the
//! site's templates ([`crate::vendor_templates`]), or taken from the cache of renders whose
//! inputs are unchanged ([`crate::render_cache`]); the device is recorded
//! in the inventory (vendor, model, MAC as `sn`, firmware, address, first and last contact) and
//! its reported firmware version handed to the catalogue. A request nobody recognises gets 404
//! and a log line saying why.
//!
//! Rendered files are byte-stable for unchanged input, so every 200 carries a strong `ETag`
//! (a hash of the body) and a request whose `If-None-Match` names it gets `304 Not Modified`
//! without a body; the contact is recorded all the same. There is no `Last-Modified`: a
//! rendered file has no modification time of its own (settings, templates and firmware targets
//! all feed it), and the entity tag is exact.
//!
//! This module translates and records; what a device gets is decided in `autoprov-core`.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use autoprov_core::innovaphone::UpdateRequest;
use autoprov_core::vendors::{self, DeviceRequest, FirmwareRef, Identity, Known, Mac, RenderError};
use autoprov_core::DeviceState;

use crate::app::{now, AppState};
use crate::render_cache::Entry;
use crate::respond::{self, ConnFacts};
use crate::vendor_templates::SiteTemplates;

/// Header carrying template errors to the operator (the phone ignores it).
pub const TEMPLATE_ERROR_HEADER: &str = "x-autoprov-template-error";

/// The render cache's key of a file: the identification, the base URL and the firmware
/// target, each length-prefixed so that no two different sets spell the same key.
fn render_key(identified: &str, base_url: &str, firmware: Option<&FirmwareRef>) -> String {
    let parts = match firmware {
        Some(f) => [identified, base_url, "+", &f.version, &f.url],
        None => [identified, base_url, "-", "", ""],
    };
    let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        key.push_str(itoa::Buffer::new().format(part.len()));
        key.push(':');
        key.push_str(part);
    }
    key
}

pub async fn handle(app: AppState, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    if parts.method != Method::GET && parts.method != Method::HEAD {
        tracing::info!(path = %raw_path, method = %parts.method, "not a provisioning request: only GET and HEAD are answered");
        return not_found(&raw_path, "only GET and HEAD are answered here");
    }
    let facts = ConnFacts::of(&parts);
    let device_ip = facts
        .forwarded_for
        .as_deref()
        .and_then(|f| f.split(',').next())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| facts.peer_ip.clone());
    let dreq = DeviceRequest {
        path: percent_encoding::percent_decode_str(&raw_path)
            .decode_utf8_lossy()
            .into_owned(),
        query: UpdateRequest::parse_query(parts.uri.query().unwrap_or("")),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        peer_ip: device_ip,
        client_cn: facts
            .client_cert
            .as_ref()
            .filter(|c| c.verified)
            .map(|c| c.subject_cn.clone()),
    };
    let site = app.site_arc();
    let config = &site.config;

    // What the inventory knows about the MAC in the request decides shared names.
    let hint = vendors::mac_hint(&dreq);
    let mut guard = match &hint {
        Some(m) => Some(app.lock_device(m.as_str()).await),
        None => None,
    };
    let mut stored = match &hint {
        Some(m) => load(&app, m).await,
        None => None,
    };
    let known = known_of(stored.as_ref());
    let raw_query = parts.uri.query().unwrap_or("");
    let identified = match app
        .identified()
        .identify(&site, &dreq, raw_query, known.as_ref())
    {
        Ok(i) => i,
        Err(reason) => {
            tracing::info!(path = %dreq.path, user_agent = %dreq.user_agent, peer = %dreq.peer_ip, %reason, "request not recognised");
            return not_found(&raw_path, &reason.0);
        }
    };
    let vendor = identified.identity.vendor;
    if config.vendors.get(vendor).is_some_and(|v| !v.enabled) {
        let reason = format!("vendor {vendor} is disabled ([vendors.{vendor}] enabled = false)");
        tracing::info!(path = %dreq.path, %reason, "request not answered");
        return not_found(&raw_path, &reason);
    }
    // The file or User-Agent named another device than the hint: use that one's record.
    if let Some(mac) = identified
        .identity
        .mac
        .clone()
        .filter(|m| Some(m) != hint.as_ref())
    {
        drop(guard.take());
        guard = Some(app.lock_device(mac.as_str()).await);
        stored = load(&app, &mac).await;
    }
    let identity = &identified.identity;
    let settings = &identified.settings;
    if let Some((user, password)) = &settings.http_credentials {
        let t = now();
        if !crate::httpauth::check(&parts.headers, parts.method.as_str(), user, password, t) {
            tracing::info!(path = %dreq.path, vendor = identity.vendor, "HTTP credentials missing or wrong");
            return crate::httpauth::challenge(
                t,
                &format!(
                    "the {} files of this device need HTTP credentials",
                    identity.vendor
                ),
            );
        }
    }
    let base_url = if config.provisioning.base_url.is_empty() {
        let scheme = if facts.https { "https://" } else { "http://" };
        let mut url = String::with_capacity(scheme.len() + facts.host.len());
        url.push_str(scheme);
        url.push_str(&facts.host);
        url
    } else {
        config
            .provisioning
            .base_url
            .trim_end_matches('/')
            .to_string()
    };
    let firmware = identity.model.as_deref().and_then(|model| {
        app.firmware()
            .catalog()
            .target(identity.vendor, model, &settings.groups)
            .map(|t| FirmwareRef {
                version: t.version,
                url: format!("{base_url}{}", t.url_path),
            })
    });

    // Everything the file depends on besides the site snapshot and the template files
    // (which the cache checks itself): see `render_cache.rs`.
    let key = render_key(&identified.key, &base_url, firmware.as_ref());
    let (rendered, problems) = match app.renders().get(&site, &key) {
        Some(hit) => (Ok(hit), Vec::new()),
        None => {
            // Computation over compiled templates: done right here, no thread hand-off.
            let templates = SiteTemplates::new(site.dir.clone(), app.vendor_templates().clone());
            let out = vendors::render_file(
                &site.config,
                identity,
                settings,
                firmware.as_ref(),
                &base_url,
                &templates,
            );
            let problems = templates.problems();
            let out = out.map(|r| {
                let etag = entity_tag(&r.body);
                let entry = Entry::new(r.body, r.content_type, etag, templates.consulted());
                app.renders().put(&site, key, entry, problems.is_empty())
            });
            (out, problems)
        }
    };
    let groups = settings.groups.clone();

    let now = now();
    if config.provisioning.inventory {
        if let Some(mac) = &identity.mac {
            let seen_only = stored
                .as_ref()
                .is_some_and(|s| records_only_seen(s, identity, &dreq.peer_ip));
            let state = record(stored, identity, mac, &dreq.peer_ip, now);
            let saved = if seen_only {
                app.store().save_seen(state).await
            } else {
                app.store().save_owned(state).await
            };
            if let Err(e) = saved {
                tracing::error!(sn = %mac, error = %e, "cannot save the device to the inventory");
            }
        }
    }
    drop(guard);
    if let (Some(mac), Some(model), Some(version)) =
        (&identity.mac, &identity.model, &identity.firmware)
    {
        if let Err(e) = app
            .firmware()
            .note_report(
                app.store(),
                mac.as_str(),
                identity.vendor,
                model,
                &groups,
                version,
            )
            .await
        {
            tracing::warn!(mac = %mac, error = %e, "cannot record the reported firmware version");
        }
    }
    app.maybe_expire(now).await;

    match rendered {
        Ok(r) => {
            tracing::info!(
                vendor = identity.vendor,
                model = identity.model.as_deref().unwrap_or("-"),
                mac = identity.mac.as_ref().map(Mac::as_str).unwrap_or("-"),
                file = %identity.file.name,
                kind = identity.file.kind.name(),
                evidence = ?identity.evidence,
                "provisioning file"
            );
            with_problems(ok(r, &parts.headers), &problems)
        }
        Err(RenderError::NotAvailable(reason)) => {
            tracing::info!(path = %dreq.path, %reason, "file not available");
            not_found(&raw_path, &reason)
        }
        Err(RenderError::Template(e)) => {
            tracing::error!(path = %dreq.path, error = %e, "cannot render the file");
            with_problems(
                respond::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "# the configuration template failed; the server log says where\r\n".into(),
                ),
                &problems,
            )
        }
    }
}

/// What the inventory record says about a device's vendor and model.
fn known_of(stored: Option<&DeviceState>) -> Option<Known> {
    stored.filter(|s| s.vendor.is_some()).map(|s| Known {
        vendor: s.vendor.clone(),
        model: s.model.clone(),
    })
}

async fn load(app: &AppState, mac: &Mac) -> Option<DeviceState> {
    match app.store().load(mac.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(mac = %mac, error = %e, "cannot read the inventory; identifying without it");
            None
        }
    }
}

/// The inventory record after this contact.
fn record(
    stored: Option<DeviceState>,
    id: &Identity,
    mac: &Mac,
    ip: &str,
    now: i64,
) -> DeviceState {
    let mut s = stored.unwrap_or_else(|| {
        tracing::info!(vendor = id.vendor, mac = %mac, model = id.model.as_deref().unwrap_or("-"), "new device in the inventory");
        DeviceState::new(mac.as_str(), now)
    });
    s.seen = now;
    s.first_seen.get_or_insert(now);
    s.vendor = Some(id.vendor.to_string());
    if id.model.is_some() {
        s.model.clone_from(&id.model);
        s.device.device_type.clone_from(&id.model);
    }
    if id.firmware.is_some() {
        s.firmware.build.clone_from(&id.firmware);
    }
    s.device.ip = Some(ip.to_string());
    s
}

/// Whether [`record`] would change nothing in `s` but the last contact (`seen`): the steady
/// poll of a known phone.
fn records_only_seen(s: &DeviceState, id: &Identity, ip: &str) -> bool {
    s.first_seen.is_some()
        && s.vendor.as_deref() == Some(id.vendor)
        && (id.model.is_none() || (s.model == id.model && s.device.device_type == id.model))
        && (id.firmware.is_none() || s.firmware.build == id.firmware)
        && s.device.ip.as_deref() == Some(ip)
}

/// The strong entity tag of a rendered body: the first 128 bits of its SHA-256, quoted.
fn entity_tag(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for b in &digest[..16] {
        let _ = write!(tag, "{b:02x}");
    }
    tag.push('"');
    tag
}

/// 200 with the body and its `ETag`, or 304 without a body when `If-None-Match` names it.
/// Only `If-None-Match` is evaluated (there is no `Last-Modified` to compare dates against).
fn ok(r: Arc<Entry>, request_headers: &axum::http::HeaderMap) -> Response {
    let etag_value = r.etag.clone();
    let etag = etag_value.to_str().unwrap_or_default();
    // Nearly always one header: no list built for it.
    let mut asked = request_headers.get_all(header::IF_NONE_MATCH).iter();
    let matches = match (asked.next(), asked.next()) {
        (None, _) => false,
        (Some(one), None) => one
            .to_str()
            .is_ok_and(|v| crate::catalog::transfer::tag_list_matches(&[v], etag, true)),
        (Some(_), Some(_)) => {
            let all: Vec<&str> = request_headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            crate::catalog::transfer::tag_list_matches(&all, etag, true)
        }
    };
    // Weak comparison, as RFC 9110 §13.1.2 asks for If-None-Match.
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(r.content_type),
            ),
            (header::ETAG, etag_value),
        ],
        r.body.clone(),
    )
        .into_response()
}

fn not_found(path: &str, reason: &str) -> Response {
    respond::text(
        StatusCode::NOT_FOUND,
        format!("# no such resource: {path}: {reason}\r\n"),
    )
}

/// Put template errors into a header (visible ASCII only).
fn with_problems(mut resp: Response, problems: &[String]) -> Response {
    if let Some(first) = problems.first() {
        let clean: String = first
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(500)
            .collect();
        if let Ok(v) = HeaderValue::from_str(&clean) {
            resp.headers_mut().insert(TEMPLATE_ERROR_HEADER, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `records_only_seen` predicts exactly whether `record` changes more than `seen`.
    #[test]
    fn only_seen_matches_what_record_changes() {
        let request = |ua: &str| DeviceRequest {
            path: "/001565aabbcc.cfg".into(),
            query: Vec::new(),
            user_agent: ua.into(),
            peer_ip: "10.0.0.1".into(),
            client_cn: None,
        };
        let full = vendors::identify(
            &request("Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc"),
            None,
        )
        .unwrap();
        let bare = vendors::identify(&request(""), None).unwrap();
        assert!(full.model.is_some() && full.firmware.is_some());
        assert!(bare.model.is_none() && bare.firmware.is_none());
        let mac = full.mac.clone().unwrap();
        let steady = record(None, &full, &mac, "10.0.0.1", 100);
        let mut variants = vec![steady.clone(), DeviceState::new(mac.as_str(), 50)];
        let mut v = steady.clone();
        v.device.ip = Some("10.0.0.9".into());
        variants.push(v);
        let mut v = steady.clone();
        v.model = Some("T48S".into());
        variants.push(v);
        let mut v = steady.clone();
        v.device.device_type = None;
        variants.push(v);
        let mut v = steady.clone();
        v.firmware.build = Some("66.86.0.1".into());
        variants.push(v);
        let mut v = steady.clone();
        v.vendor = Some("snom".into());
        variants.push(v);
        let mut v = steady.clone();
        v.first_seen = None;
        variants.push(v);
        let mut predicted_true = 0;
        for s in &variants {
            for id in [&full, &bare] {
                for ip in ["10.0.0.1", "10.0.0.2"] {
                    let predicted = records_only_seen(s, id, ip);
                    let mut after = record(Some(s.clone()), id, &mac, ip, 200);
                    assert_eq!(after.seen, 200);
                    after.seen = s.seen;
                    assert_eq!(predicted, after == *s, "{s:?} {id:?} {ip}");
                    predicted_true += usize::from(predicted);
                }
            }
        }
        assert!(predicted_true >= 2, "the steady poll is recognised");
    }
}
