//! What devices send back to the update script: `?mode=backup|query|vardump|upload`.
//!
//! Like the reference, the handlers read the raw body whatever the method (devices PUT,
//! chunked bodies included), answer with `# ...` comment lines ending in CRLF, and dispatch on
//! `mode` before anything else. Bodies larger than `server.max_upload_bytes` are refused with
//! 413 before anything is written; every file is written atomically ([`atomic_write`]); names
//! taken from the request are checked before they touch the file system.
//!
//! `vardump` writes only the two files the engine asks a device for (its own
//! `<sn>-request.p10.der` and `<sn>-requesterror` in `customcerts.dir`) and reports a CSR that
//! cannot be used; `upload` (the reference admin form's multipart POST) stores a signed
//! certificate only after [`crate::rollout::install_signed`] checked it.
//!
//! Retention and normalisation of backups are decided by
//! [`autoprov_core::innovaphone::backup`]; this module does the file and HTTP work. It must
//! never write outside the backup and certificate folders, nor write anything for a refused
//! request.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;

use autoprov_core::innovaphone::backup::{self, Stored};
use autoprov_core::DeviceState;

use crate::app::{now, AppState};
use crate::fsutil::{
    atomic_write, base64_encode, ctime_secs, latin1_decode, latin1_encode, mtime_secs,
    safe_component,
};
use crate::respond::{self, read_body};

/// The upload mode of a request, if any (`show` alone also selects the UI, as in the
/// reference).
pub fn mode_of(args: &[(String, String)]) -> Option<&str> {
    if args.iter().any(|(k, _)| k == "show") {
        return Some("show");
    }
    args.iter()
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.as_str())
}

fn arg<'a>(args: &'a [(String, String)], key: &str) -> Option<&'a str> {
    args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A response under construction: lines of bytes, each ended by CRLF.
#[derive(Default)]
struct Reply {
    buf: Vec<u8>,
}

impl Reply {
    fn line(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// The reference's `dbgout`: the content echoed as comment lines between markers.
    fn echo(&mut self, label: &str, content: &[u8]) {
        self.line(&format!("# {label} >"));
        let mut unified = Vec::with_capacity(content.len());
        let mut i = 0;
        while i < content.len() {
            if content[i] == b'\r' && content.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            unified.push(content[i]);
            i += 1;
        }
        for l in unified.split(|&b| b == b'\n') {
            self.buf.extend_from_slice(b"# ");
            self.buf.extend_from_slice(l);
            self.buf.extend_from_slice(b"\r\n");
        }
        self.line(&format!("# > {label} "));
        self.buf.extend_from_slice(b"\r\n");
    }

    fn finish(self, status: StatusCode) -> Response {
        respond::bytes(status, self.buf)
    }

    /// The reference's `bailout`: `# <msg> - exit` and stop.
    fn bail(mut self, status: StatusCode, msg: &str) -> Response {
        self.line(&format!("# {msg} - exit"));
        self.finish(status)
    }
}

pub async fn handle(
    app: AppState,
    mode: &str,
    args: Vec<(String, String)>,
    parts: Parts,
    body: Body,
) -> Response {
    let resp = match mode {
        "show" | "status" | "ui" => respond::text(
            StatusCode::OK,
            "for user interface functions, call admin/admin.php instead".into(),
        ),
        "backup" => handle_backup(&app, &args, &parts, body).await,
        "query" => handle_query(&app, &args, &parts, body).await,
        "vardump" => handle_vardump(&app, &args, &parts, body).await,
        "upload" => handle_upload(&app, &args, parts, body).await,
        other => Reply::default().bail(StatusCode::OK, &format!("unknown cmd={other}")),
    };
    tracing::info!(
        mode,
        sn = arg(&args, "sn").unwrap_or(""),
        status = resp.status().as_u16(),
        "upload request"
    );
    app.maybe_expire(now()).await;
    resp
}

fn limit(app: &AppState) -> u64 {
    app.site().config.server.max_upload_bytes
}

/// Load (or create) the state of `sn`, change it, prune old messages and save it, when state
/// tracking is on and `sn` is given. Store problems are logged; they never fail the upload.
async fn update_state(
    app: &AppState,
    sn: Option<&str>,
    now: i64,
    change: impl FnOnce(&mut DeviceState),
) {
    let cfg = &app.site().config.status;
    let Some(sn) = sn.filter(|s| !s.is_empty() && cfg.enabled) else {
        return;
    };
    let _guard = app.lock_device(sn).await;
    let mut state = match app.store().load(sn).await {
        Ok(Some(s)) => s,
        Ok(None) => DeviceState::new(sn, now),
        Err(e) => {
            tracing::error!(sn, error = %e, "cannot load device state, upload not recorded");
            return;
        }
    };
    state.seen = now;
    change(&mut state);
    state.prune_msgs(now, i64::try_from(cfg.logkeep).unwrap_or(i64::MAX));
    if let Err(e) = app.store().save(&state).await {
        tracing::error!(sn, error = %e, "cannot save device state");
    }
}

// ---------------------------------------------------------------------------------------
// mode=backup

async fn handle_backup(
    app: &AppState,
    args: &[(String, String)],
    parts: &Parts,
    body: Body,
) -> Response {
    let reply = Reply::default();
    let Some(hwid) = arg(args, "hwid") else {
        return reply.bail(
            StatusCode::OK,
            "need 'hwid' arg for mode=backup, use ?hwid=#h",
        );
    };
    let cfg = app.site().config.backup.clone();
    if cfg.dir.is_empty() {
        return reply.bail(
            StatusCode::OK,
            "backup: no backup tag or no 'dir'  attribute in config",
        );
    }
    if !safe_component(hwid) {
        return reply.bail(
            StatusCode::BAD_REQUEST,
            &format!("backup: hwid '{hwid}' cannot be used as a file name"),
        );
    }
    let Some(dir_path) = app.site().path(&cfg.dir) else {
        return reply.bail(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("backup: 'dir' {} is not a folder inside the site", cfg.dir),
        );
    };
    let data = match read_body(&parts.headers, body, limit(app)).await {
        Ok(b) => b,
        Err(e) => return respond::body_error(e, "backup"),
    };
    let now = now();
    let job = BackupJob {
        dir_name: cfg.dir.clone(),
        dir_path,
        hwid: hwid.to_string(),
        body: data.to_vec(),
        nbackups: cfg.nbackups,
        minage: cfg.minage,
        now,
    };
    let result = {
        let _serial = app.lock_backups().await;
        tokio::task::spawn_blocking(move || job.run()).await
    };
    let (reply, status, stamp) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "backup task failed");
            return Reply::default().bail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backup: internal error, nothing saved",
            );
        }
    };
    if stamp != 0 {
        update_state(app, arg(args, "sn"), now, |s| s.device.backup = Some(stamp)).await;
    }
    reply.finish(status)
}

struct BackupJob {
    /// `backup.dir` as configured (for messages, as the reference prints paths).
    dir_name: String,
    dir_path: PathBuf,
    hwid: String,
    body: Vec<u8>,
    nbackups: u32,
    minage: u32,
    now: i64,
}

struct Existing {
    stored: Stored,
    mtime: i64,
}

impl BackupJob {
    /// Store one backup: returns the reply, its status and the time to record as the
    /// device's last backup (0 = none).
    fn run(self) -> (Reply, StatusCode, i64) {
        let mut reply = Reply::default();
        let hwid = &self.hwid;
        let loc_name = format!("{}/{hwid}", self.dir_name);
        let loc = self.dir_path.join(hwid);
        let shown = |name: &str| format!("{loc_name}/{name}");

        let existing = match list_backups(&loc, hwid) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(dir = %loc.display(), error = %e, "cannot list backups");
                return (
                    bail_line(reply, &format!("backup: cannot list '{loc_name}': {e}")),
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                );
            }
        };
        let newest = existing.last();
        let (last_content, mut next_index) = match newest {
            None => {
                reply.line(&format!(
                    "# no saved files for {hwid} ({loc_name}/{hwid}.*.txt)"
                ));
                (String::new(), 0)
            }
            Some(n) => match std::fs::read(loc.join(&n.stored.name)) {
                Ok(bytes) => (latin1_decode(&bytes), n.stored.index + 1),
                Err(_) => {
                    return (
                        bail_line(
                            reply,
                            &format!("backup: cannot read file '{}'", shown(&n.stored.name)),
                        ),
                        StatusCode::INTERNAL_SERVER_ERROR,
                        0,
                    )
                }
            },
        };
        let content = backup::normalize(&latin1_decode(&self.body));
        if content == last_content {
            let (path, mtime) = match newest {
                Some(n) => (shown(&n.stored.name), n.mtime.to_string()),
                None => (String::new(), String::new()),
            };
            reply.line(&format!("# no change (newest {path}) {mtime}"));
            return (reply, StatusCode::OK, newest.map(|n| n.mtime).unwrap_or(0));
        }
        // Never overwrite: a file touched out of order could make the newest index collide.
        while loc.join(format!("{hwid}.{next_index}.txt")).exists() {
            next_index += 1;
        }
        let new_name = format!("{hwid}.{next_index}.txt");
        if let Err(e) = atomic_write(&loc.join(&new_name), &latin1_encode(&content)) {
            tracing::error!(file = %shown(&new_name), error = %e, "cannot save backup");
            return (
                bail_line(
                    reply,
                    &format!("backup: cannot save backup to file '{}'", shown(&new_name)),
                ),
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
            );
        }
        reply.line(&format!("# saving {}", shown(&new_name)));

        let oldest_first: Vec<Stored> = existing.iter().map(|e| e.stored.clone()).collect();
        let doomed: HashSet<String> =
            backup::to_delete(&oldest_first, self.nbackups, self.minage, self.now)
                .into_iter()
                .collect();
        let considered = (existing.len() + 1).saturating_sub(self.nbackups as usize);
        let t0 = self.now - i64::from(self.minage) * 86400;
        for e in existing.iter().take(considered.min(existing.len())) {
            let name = &e.stored.name;
            let facts = format!(
                "tnow={} t0={t0} minage={} mtime={}",
                self.now, self.minage, e.stored.ctime
            );
            if doomed.contains(name) {
                if let Err(err) = std::fs::remove_file(loc.join(name)) {
                    tracing::warn!(file = %shown(name), error = %err, "cannot remove old backup");
                }
                reply.line(&format!("# removing {} {facts}", shown(name)));
            } else {
                reply.line(&format!("# not removing {} {facts}", shown(name)));
            }
        }
        (reply, StatusCode::OK, self.now)
    }
}

fn bail_line(mut reply: Reply, msg: &str) -> Reply {
    reply.line(&format!("# {msg} - exit"));
    reply
}

/// The backups of `hwid` in `loc`, oldest first: by change time, then modification time,
/// then index.
fn list_backups(loc: &Path, hwid: &str) -> std::io::Result<Vec<Existing>> {
    let rd = match std::fs::read_dir(loc) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(index) = backup::index_of(&name, hwid) else {
            continue;
        };
        let meta = match entry.metadata() {
            Ok(m) if m.is_file() => m,
            _ => continue,
        };
        out.push(Existing {
            stored: Stored {
                name,
                index,
                ctime: ctime_secs(&meta),
            },
            mtime: mtime_secs(&meta),
        });
    }
    out.sort_by_key(|e| (e.stored.ctime, e.mtime, e.stored.index));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// mode=query

/// Whether `id` can be a query id (and so an XML tag name): `^[A-Za-z_][A-Za-z0-9_.-]*$`.
pub fn valid_query_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

async fn handle_query(
    app: &AppState,
    args: &[(String, String)],
    parts: &Parts,
    body: Body,
) -> Response {
    let mut reply = Reply::default();
    let Some(sn) = arg(args, "sn") else {
        return reply.bail(StatusCode::OK, "need 'sn' arg for mode=query, use ?sn=#m");
    };
    let Some(id) = arg(args, "id") else {
        return reply.bail(
            StatusCode::OK,
            "need 'id' arg for mode=query, go fix update.php",
        );
    };
    if !valid_query_id(id) {
        return reply.bail(
            StatusCode::BAD_REQUEST,
            &format!("query: id '{id}' is not a valid name (letters, digits, '_', '.', '-')"),
        );
    }
    let data = match read_body(&parts.headers, body, limit(app)).await {
        Ok(b) => b,
        Err(e) => return respond::body_error(e, "query"),
    };
    let text = crate::fsutil::decode_text(data.to_vec());
    if app.site().config.status.enabled {
        if sn.is_empty() {
            let all: Vec<&str> = args.iter().map(|(_, v)| v.as_str()).collect();
            reply.line(&format!("# no SN -- cannot log: {}", all.join(" ")));
        } else {
            let wrapped = format!("<{id}>{text}</{id}>");
            if let Err(e) = roxmltree::Document::parse(&wrapped) {
                return reply.bail(StatusCode::OK, &format!("invalid xml: {e}"));
            }
            let now = now();
            update_state(app, Some(sn), now, |s| s.set_query(id, &text, now)).await;
            reply.line(&format!("# queries {id} for {sn} saved"));
        }
    }
    reply.echo(&format!("query {id}"), &data);
    reply.finish(StatusCode::OK)
}

// ---------------------------------------------------------------------------------------
// mode=vardump

/// Whether `file` (site-relative) may be written by `mode=vardump`: inside the certificate
/// folder `certs_dir`, relative, without `..`, and not a script (`php`, `sh`, `pl`).
pub fn vardump_file_allowed(file: &str, certs_dir: &str) -> bool {
    fn parts(p: &str) -> Option<Vec<String>> {
        if p.is_empty() || p.starts_with('/') || p.contains('\\') || p.contains('\0') {
            return None;
        }
        let mut v = Vec::new();
        for c in Path::new(p).components() {
            match c {
                Component::Normal(s) => v.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => return None,
            }
        }
        Some(v)
    }
    let (Some(f), Some(d)) = (parts(file), parts(certs_dir)) else {
        return false;
    };
    if d.is_empty() || f.len() <= d.len() || f[..d.len()] != d[..] {
        return false;
    }
    let last = f.last().map(String::as_str).unwrap_or("");
    let ext = last
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    !matches!(ext.as_str(), "php" | "sh" | "pl")
}

/// Whether `file` is `<certs_dir>/<sn>-request.p10.der` or `<certs_dir>/<sn>-requesterror`
/// (compared by path components) for a serial that is a safe file name part.
pub fn vardump_target_is_own(file: &str, certs_dir: &str, sn: &str) -> bool {
    if autoprov_core::innovaphone::engine::check_serial(sn).is_err() {
        return false;
    }
    let comps = |p: &str| -> Vec<String> {
        Path::new(p)
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect()
    };
    let dir = comps(certs_dir);
    [
        format!("{sn}-request.p10.der"),
        format!("{sn}-requesterror"),
    ]
    .iter()
    .any(|name| {
        let mut want = dir.clone();
        want.push(name.clone());
        comps(file) == want
    })
}

/// The third space-separated token of the line whose first token is `var`.
pub fn extract_var<'a>(content: &'a str, var: &str) -> Option<&'a str> {
    content
        .split(['\r', '\n'])
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|t| t.len() >= 3 && t[0] == var)
        .map(|t| t[2])
}

/// `var2bin`: hex text to bytes.
pub fn var2bin(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", hex.len()));
    }
    let digit = |c: u8| -> Result<u8, String> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("'{}' is not a hex digit", c as char))
    };
    hex.as_bytes()
        .chunks(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// A DER certificate request as PEM, CRLF line ends, 64 characters a line.
pub fn der_to_pem_request(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\r\n");
    if b64.is_empty() {
        out.push_str("\r\n");
    }
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out.push_str("-----END CERTIFICATE REQUEST-----\r\n");
    out
}

/// The reference's `str2dnsname`: runs of characters other than `[-A-Za-z0-9]` become `-`,
/// then lowercase.
pub fn dns_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c.to_ascii_lowercase());
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out
}

async fn handle_vardump(
    app: &AppState,
    args: &[(String, String)],
    parts: &Parts,
    body: Body,
) -> Response {
    let mut reply = Reply::default();
    let Some(sn) = arg(args, "sn") else {
        return reply.bail(StatusCode::OK, "need 'sn' arg for mode=vardump, use ?sn=#m");
    };
    let Some(var) = arg(args, "var") else {
        return reply.bail(
            StatusCode::OK,
            "need 'var' arg for mode=vardump, use ?var=varname",
        );
    };
    let Some(file) = arg(args, "file") else {
        return reply.bail(
            StatusCode::OK,
            "need 'file' arg for mode=vardump, use ?file=filename",
        );
    };
    let certs_dir = app.site().config.customcerts.dir.clone();
    if certs_dir.is_empty() {
        tracing::warn!(file, "vardump refused: customcerts.dir is not set");
        return reply.bail(
            StatusCode::BAD_REQUEST,
            &format!(
                "vardump: certificate handling is off (customcerts 'dir' is empty), not writing '{file}'"
            ),
        );
    }
    let target = app.site().path(file);
    let target = match target {
        Some(t) if vardump_file_allowed(file, &certs_dir) => t,
        _ => {
            tracing::warn!(file, "vardump refused: file outside the certificate folder");
            return reply.bail(
                StatusCode::BAD_REQUEST,
                "?file: filename must not point to external directory",
            );
        }
    };
    let data = match read_body(&parts.headers, body, limit(app)).await {
        Ok(b) => b,
        Err(e) => return respond::body_error(e, "vardump"),
    };
    reply.echo(&format!("vardump (before proc) {var}"), &data);
    let content = latin1_decode(&data);
    let Some(value) = extract_var(&content, var) else {
        return reply.bail(
            StatusCode::OK,
            &format!("failed to extract '{var}' from PUT data for mode=vardump"),
        );
    };
    let (member, value): (&str, Vec<u8>) = match arg(args, "proc") {
        Some("var2bin") => match var2bin(value) {
            Ok(v) => ("var2bin", v),
            Err(why) => {
                return reply.bail(
                    StatusCode::BAD_REQUEST,
                    &format!("var2bin: value of '{var}' is not hex: {why}"),
                )
            }
        },
        _ => ("none", latin1_encode(value)),
    };
    reply.line(&format!(
        "# processed (with '{member}') length: {}",
        value.len()
    ));
    // Only the two files the engine asks devices for, named after the device itself: a device
    // must not be able to replace CA certificates, signed certificates or another device's CSR.
    if !vardump_target_is_own(file, &certs_dir, sn) {
        tracing::warn!(
            file,
            sn,
            "vardump refused: not a file autoprov asks this device for"
        );
        return reply.bail(
            StatusCode::BAD_REQUEST,
            &format!(
                "vardump: '{file}' is not a file autoprov asks device '{sn}' for (only {}/<sn>-request.p10.der and {}/<sn>-requesterror), nothing written",
                certs_dir.trim_end_matches('/'),
                certs_dir.trim_end_matches('/')
            ),
        );
    }
    let mut csr_problem = None;
    if file.ends_with("-request.p10.der") {
        if let Err(e) = crate::pki::read_csr(&value, var) {
            csr_problem = Some(format!(
                "{e}; it cannot be signed - the device will be asked again once the file is removed"
            ));
        }
    }
    let to_write = value.clone();
    let written = tokio::task::spawn_blocking(move || atomic_write(&target, &to_write)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(file, error = %e, "vardump: cannot write file");
            return reply.bail(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("vardump: cannot write '{file}': {e}"),
            );
        }
        Err(e) => {
            tracing::error!(file, error = %e, "vardump: write task failed");
            return reply.bail(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("vardump: cannot write '{file}'"),
            );
        }
    }
    let (postproc, pp_msg) = match arg(args, "postproc") {
        Some("createPemFromDer") => {
            let msg = create_pem(app, &certs_dir, sn, value).await;
            match &msg {
                None => reply.line("# sucessfully post-processed (with 'createPemFromDer')"),
                Some(m) => reply.line(&format!(
                    "# failed to  post-process (with 'createPemFromDer'): {m}"
                )),
            }
            ("createPemFromDer", msg.unwrap_or_default())
        }
        _ => ("none", String::new()),
    };
    if let Some(p) = &csr_problem {
        tracing::warn!(file, sn, problem = %p, "unusable CSR uploaded");
        reply.line(&format!("# warning: {p}"));
    }
    let msg = format!("uploaded {file} with proc={member}/postproc={postproc} {pp_msg}");
    reply.line(&format!("# {msg}"));
    let now = now();
    let stamp = format!("var-{}", dns_name(var));
    update_state(app, Some(sn), now, |s| {
        s.set_var_stamp(&stamp, now);
        s.add_msg(&msg, now);
        if let Some(p) = &csr_problem {
            s.add_msg(&format!("certificates: unusable CSR: {p}"), now);
        }
    })
    .await;
    reply.finish(StatusCode::OK)
}

// ---------------------------------------------------------------------------------------
// mode=upload

/// Whether `proceed` may be used as a redirect target: a path on this server, not a URL
/// elsewhere.
fn safe_redirect(proceed: &str) -> bool {
    let first = proceed.split(['/', '?', '#']).next().unwrap_or_default();
    !proceed.is_empty()
        && !proceed.starts_with("//")
        && !first.contains(':')
        && !proceed.contains('\\')
        && !proceed.chars().any(|c| c.is_control())
}

/// `mode=upload&sn=&file=<dir>/<sn>-signedrequest.cer&proceed=`: a multipart POST whose field
/// `cert-<sn>` holds the signed certificate (PEM or DER). It is checked (a device certificate
/// for the key of the pending CSR) and stored for the device's next poll; the answer is a 303
/// to `proceed`, or a comment line without it.
async fn handle_upload(
    app: &AppState,
    args: &[(String, String)],
    parts: Parts,
    body: Body,
) -> Response {
    let reply = Reply::default();
    let Some(sn) = arg(args, "sn") else {
        return reply.bail(StatusCode::OK, "need 'sn' arg for mode=upload, use ?sn=#m");
    };
    let Some(file) = arg(args, "file") else {
        return reply.bail(
            StatusCode::OK,
            "need 'file' arg for mode=upload, use ?file=filename",
        );
    };
    let files = match crate::rollout::device_files(&app.site(), sn) {
        Ok(f) => f,
        Err(e) => return reply.bail(StatusCode::BAD_REQUEST, &format!("upload: {e}")),
    };
    let same = |a: &str, b: &str| {
        let n = |p: &str| -> Vec<String> {
            Path::new(p)
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        };
        n(a) == n(b)
    };
    if !same(file, &files.signed_rel) {
        tracing::warn!(file, sn, "upload refused: wrong target");
        return reply.bail(
            StatusCode::BAD_REQUEST,
            &format!(
                "upload: 'file' must be {} (the signed certificate of device {sn}), nothing written",
                files.signed_rel
            ),
        );
    }
    let data = match read_body(&parts.headers, body, limit(app)).await {
        Ok(b) => b,
        Err(e) => return respond::body_error(e, "upload"),
    };
    let req = axum::extract::Request::from_parts(parts, Body::from(data));
    use axum::extract::{FromRequest, Multipart};
    let mut multipart = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => {
            let msg = format!(
                "upload: expected a multipart/form-data POST with the field 'cert-{sn}' ({e})"
            );
            return reply.bail(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let wanted = format!("cert-{sn}").to_lowercase();
    let mut cert: Option<bytes::Bytes> = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                if field.name().map(str::to_lowercase).as_deref() == Some(wanted.as_str()) {
                    match field.bytes().await {
                        Ok(b) => cert = Some(b),
                        Err(e) => {
                            return reply.bail(
                                StatusCode::BAD_REQUEST,
                                &format!("upload error {e} - use back button to continue"),
                            )
                        }
                    }
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return reply.bail(
                    StatusCode::BAD_REQUEST,
                    &format!("upload: broken multipart body ({e})"),
                )
            }
        }
    }
    let Some(cert) = cert.filter(|c| !c.is_empty()) else {
        return reply.bail(
            StatusCode::BAD_REQUEST,
            &format!("No File uploaded (2) - use back button to continue (expected the field 'cert-{sn}')"),
        );
    };
    let site = app.site_arc();
    let sn_owned = sn.to_string();
    let installed = tokio::task::spawn_blocking(move || {
        crate::rollout::install_signed(&site, &sn_owned, &cert)
    })
    .await;
    let summary = match installed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(sn, error = %e, "signed certificate refused");
            return reply.bail(
                StatusCode::BAD_REQUEST,
                &format!("upload: {e}, nothing written"),
            );
        }
        Err(e) => {
            tracing::error!(sn, error = %e, "upload task failed");
            return reply.bail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "upload: internal error, nothing written",
            );
        }
    };
    let msg = format!(
        "certificates: signed certificate uploaded (CN '{}', issuer '{}', valid until {})",
        summary.subject_cn,
        summary.issuer_cn,
        crate::rollout::format_time(summary.not_after)
    );
    let now = now();
    update_state(app, Some(sn), now, |s| s.add_msg(&msg, now)).await;
    match arg(args, "proceed") {
        Some(p) if safe_redirect(p) => axum::response::Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(axum::http::header::LOCATION, p)
            .body(Body::empty())
            .unwrap_or_else(|_| respond::text(StatusCode::OK, format!("# {msg}\r\n"))),
        _ => {
            let mut r = Reply::default();
            r.line(&format!(
                "# {msg}: stored as {}, the device gets it with its next poll",
                files.signed_rel
            ));
            r.finish(StatusCode::OK)
        }
    }
}

/// Write `<certs dir>/<sn>-request.p10.pem`; `None` on success, else what went wrong.
async fn create_pem(app: &AppState, certs_dir: &str, sn: &str, der: Vec<u8>) -> Option<String> {
    if !safe_component(sn) {
        return Some(format!("serial '{sn}' cannot be used in a file name"));
    }
    let rel = format!("{}/{sn}-request.p10.pem", certs_dir.trim_end_matches('/'));
    let Some(path) = app.site().path(&rel) else {
        return Some(format!("'{rel}' is not inside the site"));
    };
    let pem = der_to_pem_request(&der);
    match tokio::task::spawn_blocking(move || atomic_write(&path, pem.as_bytes())).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("cannot write {rel}: {e}")),
        Err(e) => Some(format!("cannot write {rel}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vardump_files() {
        assert!(vardump_file_allowed(
            "certs/00-90-33-30-00-af-requesterror",
            "certs"
        ));
        assert!(vardump_file_allowed("./certs/x.der", "certs/"));
        assert!(vardump_file_allowed("certs/sub/x.der", "certs"));
        for bad in [
            "../x",
            "/etc/x",
            "certs/../x",
            "certs",
            "certs/",
            "other/x",
            "certs/x.php",
            "certs/x.PHP",
            "certs/x.sh",
            "certs/x.pl",
            "certs\\x",
            "",
        ] {
            assert!(!vardump_file_allowed(bad, "certs"), "{bad}");
        }
        assert!(!vardump_file_allowed("certs/x", ""));
    }

    #[test]
    fn vardump_own_files_only() {
        let sn = "00-90-33-30-00-af";
        assert!(vardump_target_is_own(
            &format!("certs/{sn}-request.p10.der"),
            "certs",
            sn
        ));
        assert!(vardump_target_is_own(
            &format!("./certs/{sn}-requesterror"),
            "certs/",
            sn
        ));
        for bad in [
            "certs/CAkey-autoprov.pem",
            "certs/00-90-33-30-00-aa-request.p10.der",
            "certs/00-90-33-30-00-af-signedrequest.cer",
            "certs/sub/00-90-33-30-00-af-requesterror",
        ] {
            assert!(!vardump_target_is_own(bad, "certs", sn), "{bad}");
        }
        assert!(!vardump_target_is_own(
            "certs/..-requesterror",
            "certs",
            ".."
        ));
        assert!(safe_redirect("admin/admin.php?mode=ui"));
        assert!(safe_redirect("/status"));
        for bad in [
            "https://evil/",
            "//evil/x",
            "/\\evil/x",
            "javascript:alert(1)",
            "",
            "a\r\nb",
        ] {
            assert!(!safe_redirect(bad), "{bad}");
        }
    }

    #[test]
    fn extract() {
        let c = "vars read X509/REQUEST\r\nX509/REQUEST pb 3082AB\r\nX509/OTHER p 1\r\n";
        assert_eq!(extract_var(c, "X509/REQUEST"), Some("3082AB"));
        assert_eq!(extract_var(c, "X509/OTHER"), Some("1"));
        assert_eq!(extract_var(c, "X509/NONE"), None);
        assert_eq!(extract_var("X509/REQUEST pb", "X509/REQUEST"), None);
    }

    #[test]
    fn hex() {
        assert_eq!(var2bin("3082aBff").unwrap(), vec![0x30, 0x82, 0xab, 0xff]);
        assert!(var2bin("308").unwrap_err().contains("odd"));
        assert!(var2bin("zz").unwrap_err().contains("hex"));
        assert_eq!(var2bin("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn pem() {
        let der = vec![0u8; 60]; // 80 base64 characters: one full line and one short
        let pem = der_to_pem_request(&der);
        let lines: Vec<&str> = pem.split("\r\n").collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE REQUEST-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 16);
        assert_eq!(lines[3], "-----END CERTIFICATE REQUEST-----");
        assert!(pem.ends_with("-----\r\n"));
    }

    #[test]
    fn names() {
        assert_eq!(dns_name("X509/REQUESTERROR"), "x509-requesterror");
        assert_eq!(dns_name("a  b//c"), "a-b-c");
        assert!(valid_query_id("admin"));
        assert!(valid_query_id("_x.y-z9"));
        for bad in ["", "9a", "a b", "a/b", "<a>", "a>"] {
            assert!(!valid_query_id(bad), "{bad}");
        }
    }

    #[test]
    fn echo_format() {
        let mut r = Reply::default();
        r.echo("query admin", b"<info>\r\n<x/>\r\n</info>");
        assert_eq!(
            String::from_utf8(r.buf).unwrap(),
            "# query admin >\r\n# <info>\r\n# <x/>\r\n# </info>\r\n# > query admin \r\n\r\n"
        );
    }

    #[test]
    fn mode_selection() {
        let a = |s: &str| autoprov_core::innovaphone::UpdateRequest::parse_query(s);
        assert_eq!(mode_of(&a("mode=backup&hwid=x")), Some("backup"));
        assert_eq!(mode_of(&a("show&x=1")), Some("show"));
        assert_eq!(mode_of(&a("sn=1")), None);
    }
}
