//! The HTML pages of the operators' UI (see [`crate::admin`]).

use std::fmt::Write as _;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use autoprov_core::innovaphone::{plan_update, UpdateRequest};

use super::auth::{self, Operator};
use super::service::{self, ListQuery, ServiceError};
use super::{
    ago, enc, esc, field, html_response, layout, query, redirect, require, require_form, time,
};
use crate::app::{now, AppState};

/// Rows per page of the device list.
pub const PAGE_SIZE: usize = 100;

fn err_page(op: &Operator, e: ServiceError) -> Response {
    let status = match e {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut r = layout(
        op,
        "Error",
        &format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
    );
    *r.status_mut() = status;
    r
}

pub async fn home(State(app): State<AppState>, req: Request) -> Response {
    match require(&app, req.headers()).await {
        Ok(_) => redirect("/admin/devices"),
        Err(r) => r,
    }
}

fn login_html(csrf: &str, msg: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Log in - autoprov</title></head>\
         <body><h1>autoprov</h1>{m}<form method=\"post\" action=\"/admin/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
         <label>User <input name=\"user\" id=\"user\" value=\"admin\" autocomplete=\"username\"></label> \
         <label>Password <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\"></label> \
         <button id=\"login\">Log in</button></form></body></html>",
        c = esc(csrf),
        m = if msg.is_empty() {
            String::new()
        } else {
            format!("<p class=\"error\">{}</p>", esc(msg))
        }
    )
}

/// GET /admin/login: the form, with a fresh double-submit CSRF cookie.
pub async fn login_form(req: Request) -> Response {
    let t = auth::random_token();
    let mut r = html_response(StatusCode::OK, login_html(&t, ""));
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(
        auth::LOGIN_COOKIE,
        &t,
        3600,
        auth::is_https(&req),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// POST /admin/login: check CSRF (cookie = field), origin, rate limit, password.
pub async fn login(State(app): State<AppState>, req: Request) -> Response {
    let https = auth::is_https(&req);
    let key = format!("{}|{}", app.site_dir().display(), auth::peer(&req));
    let cookie = auth::cookie(req.headers(), auth::LOGIN_COOKIE).unwrap_or_default();
    if !auth::same_origin(req.headers()) {
        return super::forbidden("cross-site request refused");
    }
    let Some(body) = super::body_text(req.into_body()).await else {
        return super::forbidden("request body too large");
    };
    let form = super::parse_form(&String::from_utf8_lossy(&body));
    if !auth::token_eq(field(&form, "csrf").unwrap_or(""), &cookie) {
        return super::forbidden("missing or wrong CSRF token: reload the login page");
    }
    let t = now();
    if !auth::login_allowed(&key, t) {
        let mut r = html_response(
            StatusCode::TOO_MANY_REQUESTS,
            login_html(&cookie, "Too many failed logins: wait a few minutes."),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("300"));
        return r;
    }
    let user = field(&form, "user").unwrap_or("").to_string();
    let password = field(&form, "password").unwrap_or("").to_string();
    let stored = app.store().user_get(&user).await.ok().flatten();
    // Unknown users cost one argon2 verification too (no user enumeration by timing).
    let hash = stored
        .map(|u| u.hash)
        .unwrap_or_else(|| auth::dummy_hash().to_string());
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    if !ok {
        auth::login_failed(&key, t);
        auth::audit(&app, &user, "login-failed", "", &key).await;
        return html_response(
            StatusCode::UNAUTHORIZED,
            login_html(&cookie, "Wrong user name or password."),
        );
    }
    auth::login_succeeded(&key);
    let sid = auth::random_token();
    let csrf = auth::random_token();
    if let Err(e) = app
        .store()
        .session_create(
            &auth::secret_hash(&sid),
            &user,
            &csrf,
            t,
            t + auth::SESSION_TTL,
        )
        .await
    {
        return html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("<p>cannot create the session: {}</p>", esc(&e.to_string())),
        );
    }
    auth::audit(&app, &user, "login", "", "").await;
    let mut r = redirect("/admin/devices");
    for c in [
        auth::set_cookie(auth::SESSION_COOKIE, &sid, auth::SESSION_TTL, https),
        auth::set_cookie(auth::LOGIN_COOKIE, "", 0, https),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// POST /admin/logout.
pub async fn logout(State(app): State<AppState>, req: Request) -> Response {
    let (op, _, https) = match require_form(&app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(sid) = &op.session {
        let _ = app
            .store()
            .session_delete(&auth::secret_hash(sid), now())
            .await;
    }
    auth::audit(&app, &op.user, "logout", "", "").await;
    let mut r = redirect("/admin/login");
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(auth::SESSION_COOKIE, "", 0, https)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// GET /admin/devices?filter=&sort=&page=
pub async fn devices(State(app): State<AppState>, req: Request) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let q = query(&req);
    let filter = field(&q, "filter").unwrap_or("").to_string();
    let sort = field(&q, "sort").unwrap_or("sn").to_string();
    let page: usize = field(&q, "page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let lq = ListQuery {
        filter: filter.clone(),
        sort: sort.clone(),
        offset: page * PAGE_SIZE,
        limit: PAGE_SIZE,
    };
    let list =
        match service::list_devices_indexed(&app.site(), app.store(), app.inventory(), &lq, now())
            .await
        {
            Ok(l) => l,
            Err(e) => return err_page(&op, e),
        };
    let mut b = format!(
        "<form method=\"get\" action=\"/admin/devices\"><input name=\"filter\" id=\"filter\" value=\"{}\" \
         placeholder=\"filter: whole words, all must match; present, missing\" size=\"50\">\
         <input type=\"hidden\" name=\"sort\" value=\"{}\"><button id=\"apply\">Filter</button></form>\
         <p id=\"count\">{} device(s)</p><table id=\"devices\"><tr>",
        esc(&filter),
        esc(&sort),
        list.total
    );
    let cols = [
        ("sn", "Device"),
        ("vendor", "Vendor"),
        ("model", "Model"),
        ("name", "Name"),
        ("ip", "IP"),
        ("phase", "Phase"),
        ("", "Classes"),
        ("", "Environments"),
        ("firmware", "Firmware (target)"),
        ("", "Boot"),
        ("seen", "Last seen"),
        ("last_backup", "Last backup"),
        ("", "Certificates"),
    ];
    for (key, label) in cols {
        if key.is_empty() {
            let _ = write!(b, "<th>{label}</th>");
        } else {
            let next = if sort == key {
                format!("-{key}")
            } else {
                key.to_string()
            };
            let _ = write!(
                b,
                "<th><a href=\"/admin/devices?filter={}&amp;sort={}\">{label}</a></th>",
                enc(&filter),
                enc(&next)
            );
        }
    }
    // The query `show` columns (seed 003), after the fixed ones.
    for title in &list.show_titles {
        let _ = write!(b, "<th class=\"show\">{}</th>", esc(title));
    }
    b.push_str("</tr>");
    for d in &list.devices {
        let _ = write!(
            b,
            "<tr class=\"{}\"><td><a href=\"/admin/devices/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            if d.missing { "missing" } else { "present" },
            enc(&d.sn),
            esc(&d.sn),
            esc(&d.vendor),
            esc(&d.model),
            esc(&d.name),
            esc(&d.ip),
            if d.proxy.is_empty() { String::new() } else { format!(" via {}", esc(&d.proxy)) },
            esc(&d.phase),
            esc(&d.classes),
            esc(&d.environments),
            esc(&d.firmware),
            if d.firmware_target.is_empty() || d.firmware_target == d.firmware {
                String::new()
            } else {
                format!(" &rarr; {}", esc(&d.firmware_target))
            },
            esc(&d.bootcode),
            esc(&ago(d.seen)),
            esc(&d.last_backup.map(time).unwrap_or_else(|| "-".into())),
            esc(&d.certstat),
        );
        for v in &d.show {
            let _ = write!(b, "<td class=\"show\">{}</td>", esc(&v.value));
        }
        b.push_str("</tr>");
    }
    b.push_str("</table>");
    if list.total > PAGE_SIZE {
        let pages = list.total.div_ceil(PAGE_SIZE);
        b.push_str("<p>Page: ");
        for p in 0..pages {
            let _ = write!(
                b,
                "<a href=\"/admin/devices?filter={}&amp;sort={}&amp;page={p}\">{}</a> ",
                enc(&filter),
                enc(&sort),
                p + 1
            );
        }
        b.push_str("</p>");
    }
    layout(&op, "Devices", &b)
}

/// GET /admin/devices/{sn}
pub async fn device(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let d = match service::show_device(app.store(), &sn).await {
        Ok(d) => d,
        Err(e) => return err_page(&op, e),
    };
    let site = app.site();
    let row = service::row_with_show(&site, &d, now());
    let s = enc(&sn);
    let mut b = String::from("<h2>Identity</h2><table id=\"identity\">");
    for (k, v) in [
        ("Serial", row.sn.clone()),
        ("Vendor", row.vendor.clone()),
        ("Model", row.model.clone()),
        ("Name", row.name.clone()),
        ("IP", row.ip.clone()),
        ("Proxy", row.proxy.clone()),
        ("Phase", row.phase.clone()),
        ("Classes", row.classes.clone()),
        ("Environments", row.environments.clone()),
        ("Firmware", row.firmware.clone()),
        ("Firmware requested", row.firmware_target.clone()),
        ("Boot code", row.bootcode.clone()),
        ("Last seen", format!("{} ({})", time(d.seen), ago(d.seen))),
        (
            "Status",
            if row.missing {
                "missing".into()
            } else {
                "present".into()
            },
        ),
    ] {
        let _ = write!(b, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
    }
    b.push_str("</table>");
    if !row.show.is_empty() {
        // The query `show` values (seed 003), with their titles.
        b.push_str("<h2>Status</h2><table id=\"show\">");
        for v in &row.show {
            let _ = write!(
                b,
                "<tr><th>{}</th><td>{}</td></tr>",
                esc(&v.title),
                esc(&v.value)
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Messages</h2><table id=\"messages\">");
    for m in &d.msgs {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&time(m.time)),
            esc(&m.msg)
        );
    }
    b.push_str("</table><h2>Delivered scripts</h2><table id=\"scripts\"><tr><th>File</th><th>Version</th><th>Delivered</th></tr>");
    for sc in &d.scripts {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&sc.filename),
            sc.version,
            esc(&time(sc.delivered))
        );
    }
    b.push_str("</table><h2>Query results</h2><table id=\"queries\">");
    for q in &d.queries {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            esc(&q.id),
            esc(&time(q.seen)),
            esc(&q.body)
        );
    }
    b.push_str("</table><h2>Backups</h2>");
    match service::list_backups(&site, &d) {
        Ok(list) if !list.is_empty() => {
            let _ = write!(b, "<form method=\"get\" action=\"/admin/devices/{s}/diff\"><table id=\"backups\"><tr><th>old</th><th>new</th><th>File</th><th>Size</th><th>Time</th></tr>");
            let n = list.len();
            for (i, bk) in list.iter().enumerate() {
                let _ = write!(
                    b,
                    "<tr><td><input type=\"radio\" name=\"old\" value=\"{v}\"{}></td>\
                     <td><input type=\"radio\" name=\"new\" value=\"{v}\"{}></td>\
                     <td><a href=\"/admin/devices/{s}/backups/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                    if n >= 2 && i == n - 2 { " checked" } else { "" },
                    if i == n - 1 { " checked" } else { "" },
                    enc(&bk.name),
                    esc(&bk.name),
                    bk.size,
                    esc(&time(bk.modified)),
                    v = esc(&bk.name),
                );
            }
            b.push_str("</table><button id=\"diff\">Diff</button></form>");
        }
        Ok(_) => b.push_str("<p>No backups.</p>"),
        Err(e) => {
            let _ = write!(b, "<p>{}</p>", esc(&e.to_string()));
        }
    }
    b.push_str("<h2>Certificates</h2>");
    let ci = service::cert_info(&site, &d);
    let _ = write!(
        b,
        "<p>State: <span id=\"certstat\">{}</span></p>",
        esc(&ci.certstat)
    );
    if let Some(cn) = &ci.csr {
        let _ = write!(
            b,
            "<p>Pending CSR (CN {}): <a href=\"/admin/devices/{s}/csr\" id=\"csr\">download</a></p>",
            esc(cn)
        );
    }
    if let Some(e) = &ci.csr_error {
        let _ = write!(b, "<p>CSR: {}</p>", esc(e));
    }
    if let Some(cn) = &ci.signed_cn {
        let _ = write!(
            b,
            "<p id=\"signed\">Signed certificate waiting for the device: CN {} until {}</p>",
            esc(cn),
            esc(&time(ci.signed_not_after.unwrap_or(0)))
        );
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/admin/devices/{s}/certificate\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
         <label>Signed certificate (PEM)<br><textarea name=\"pem\" id=\"pem\" rows=\"6\" cols=\"70\"></textarea></label><br>\
         <button id=\"upload\">Upload signed certificate</button></form>\
         <h2>Actions</h2><p><a href=\"/admin/devices/{s}/preview\" id=\"preview\">Preview as this device</a></p>\
         <form method=\"post\" action=\"/admin/devices/{s}/resync\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
         <button id=\"resync\">Resync now (SIP NOTIFY check-sync)</button></form>\
         <form method=\"post\" action=\"/admin/devices/{s}/forget\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
         <button id=\"forget\">Forget this device</button></form>",
        c = esc(&op.csrf)
    );
    layout(&op, &format!("Device {sn}"), &b)
}

/// POST /admin/devices/{sn}/forget
pub async fn forget(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    let (op, _, _) = match require_form(&app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match service::forget_device(app.store(), &sn).await {
        Ok(()) => {
            auth::audit(&app, &op.user, "forget-device", &sn, "").await;
            redirect("/admin/devices")
        }
        Err(e) => err_page(&op, e),
    }
}

/// POST /admin/devices/{sn}/resync: SIP NOTIFY check-sync.
pub async fn resync(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    let (op, _, _) = match require_form(&app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match service::resync_device(&app, &sn).await {
        Ok(outcome) => {
            auth::audit(&app, &op.user, "resync", &sn, &outcome).await;
            redirect(&format!("/admin/devices/{}", enc(&sn)))
        }
        Err(e) => err_page(&op, e),
    }
}

/// GET /admin/devices/{sn}/backups/{name}: download.
pub async fn backup_download(
    State(app): State<AppState>,
    Path((sn, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let r = async {
        let d = service::show_device(app.store(), &sn).await?;
        service::read_backup(&app.site(), &d, &name)
    }
    .await;
    match r {
        Ok(bytes) => download(bytes, &name, "text/plain; charset=utf-8"),
        Err(e) => err_page(&op, e),
    }
}

/// A file download response.
pub fn download(bytes: Vec<u8>, name: &str, ctype: &'static str) -> Response {
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    super::secure_headers(h);
    r
}

/// GET /admin/devices/{sn}/diff?old=&new=
pub async fn diff(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let q = query(&req);
    let old = field(&q, "old").unwrap_or("").to_string();
    let new = field(&q, "new").unwrap_or("").to_string();
    let r = async {
        let d = service::show_device(app.store(), &sn).await?;
        service::diff_backups(&app.site(), &d, &old, &new)
    }
    .await;
    match r {
        Ok(lines) => {
            let mut b = format!(
                "<p>{} &rarr; {}</p><pre id=\"diffout\">",
                esc(&old),
                esc(&new)
            );
            for l in lines {
                let class = match l.op {
                    '+' => "add",
                    '-' => "del",
                    _ => "same",
                };
                let _ = writeln!(
                    b,
                    "<span class=\"{class}\">{} {}</span>",
                    l.op,
                    esc(&l.text)
                );
            }
            b.push_str("</pre>");
            let _ = write!(b, "<p><a href=\"/admin/devices/{}\">back</a></p>", enc(&sn));
            layout(&op, &format!("Backup diff of {sn}"), &b)
        }
        Err(e) => err_page(&op, e),
    }
}

/// GET /admin/devices/{sn}/csr: the pending CSR as PEM.
pub async fn csr(State(app): State<AppState>, Path(sn): Path<String>, req: Request) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    match service::csr_pem(&app.site(), &sn) {
        Ok(p) => download(
            p.into_bytes(),
            &format!("{sn}-request.pem"),
            "application/x-pem-file",
        ),
        Err(e) => err_page(&op, e),
    }
}

/// POST /admin/devices/{sn}/certificate (form field `pem`).
pub async fn upload_cert(
    State(app): State<AppState>,
    Path(sn): Path<String>,
    req: Request,
) -> Response {
    let (op, form, _) = match require_form(&app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let pem = field(&form, "pem").unwrap_or("").to_string();
    match service::upload_signed(&app.site(), &sn, pem.as_bytes()) {
        Ok(cn) => {
            auth::audit(&app, &op.user, "upload-certificate", &sn, &cn).await;
            redirect(&format!("/admin/devices/{}", enc(&sn)))
        }
        Err(e) => err_page(&op, e),
    }
}

/// Run the engine as if `d` polled now, without writing any state.
pub async fn preview_outcome(
    app: &AppState,
    sn: &str,
) -> Result<autoprov_core::innovaphone::Outcome, ServiceError> {
    let d = service::show_device(app.store(), sn).await?;
    let mut args = vec![
        (
            "type".to_string(),
            d.device.device_type.clone().unwrap_or_default(),
        ),
        ("sn".to_string(), d.sn.clone()),
        (
            "hwid".to_string(),
            d.device.hwid.clone().unwrap_or_default(),
        ),
        ("ip".to_string(), d.device.ip.clone().unwrap_or_default()),
    ];
    if let Some(p) = &d.firmware.build {
        args.push(("PROT".into(), p.clone()));
    }
    if let Some(p) = &d.bootcode.build {
        args.push(("BOOT".into(), p.clone()));
    }
    if let Some(e) = &d.device.environments {
        args.push(("env".into(), e.clone()));
    }
    let host = app
        .site()
        .config
        .server
        .listen
        .first()
        .cloned()
        .unwrap_or_else(|| "autoprov".into());
    let req = UpdateRequest {
        args,
        https: false,
        server_port: None,
        host,
        path: "/update.php".into(),
        peer_ip: d.device.ip.clone().unwrap_or_default(),
        forwarded_for: None,
        client_cert: None,
    };
    let mut ports = app.ports(tokio::runtime::Handle::current());
    let site = app.site_arc();
    let t = now();
    tokio::task::spawn_blocking(move || plan_update(&site, &req, Some(d), t, &mut ports))
        .await
        .map_err(|e| ServiceError::Io(format!("preview failed: {e}")))
}

/// GET /admin/devices/{sn}/preview
pub async fn preview(
    State(app): State<AppState>,
    Path(sn): Path<String>,
    req: Request,
) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    match preview_outcome(&app, &sn).await {
        Ok(o) => {
            let mut b = String::from("<p>What the device would receive now (no state is written).</p><h2>Explanation</h2><ul id=\"notes\">");
            for n in &o.notes {
                let _ = write!(b, "<li>{}</li>", esc(n));
            }
            let _ = write!(
                b,
                "</ul><h2>Script</h2><pre id=\"script\">{}</pre>",
                esc(&o.body)
            );
            layout(&op, &format!("Preview as {sn}"), &b)
        }
        Err(e) => err_page(&op, e),
    }
}

/// A horizontal SVG bar chart of `(label, value)`.
pub fn bar_chart(id: &str, data: &[(String, usize)]) -> String {
    let max = data.iter().map(|d| d.1).max().unwrap_or(1).max(1);
    let h = 22 * data.len().max(1) + 4;
    let mut s = format!(
        "<svg id=\"{}\" width=\"620\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(id)
    );
    for (i, (label, v)) in data.iter().enumerate() {
        let y = 2 + i * 22;
        let w = 350 * v / max;
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"220\" y=\"{y}\" width=\"{w}\" height=\"18\" fill=\"#4a7\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\">{v}</text>",
            y + 14,
            esc(label),
            225 + w,
            y + 14
        );
    }
    s.push_str("</svg>");
    s
}

/// GET /admin/overview: fleet charts.
pub async fn overview(State(app): State<AppState>, req: Request) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let t = now();
    let page = match service::list_devices_indexed(
        &app.site(),
        app.store(),
        app.inventory(),
        &ListQuery::default(),
        t,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return err_page(&op, e),
    };
    use std::collections::BTreeMap;
    let mut fw: BTreeMap<String, usize> = BTreeMap::new();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    let mut hours: BTreeMap<String, usize> = BTreeMap::new();
    let (mut missing, mut present) = (0, 0);
    for d in &page.devices {
        *fw.entry(format!(
            "{} {} {}",
            d.vendor,
            d.model,
            if d.firmware.is_empty() {
                "?"
            } else {
                &d.firmware
            }
        ))
        .or_default() += 1;
        *phases
            .entry(if d.phase.is_empty() {
                "-".into()
            } else {
                d.phase.clone()
            })
            .or_default() += 1;
        let age_h = (t - d.seen).max(0) / 3600;
        if age_h < 24 {
            *hours.entry(format!("{age_h:02}h ago")).or_default() += 1;
        }
        if d.missing {
            missing += 1;
        } else {
            present += 1;
        }
    }
    let v = |m: BTreeMap<String, usize>| m.into_iter().collect::<Vec<_>>();
    let b = format!(
        "<p>{} device(s)</p><h2>Firmware versions per model</h2>{}<h2>Phases</h2>{}\
         <h2>Devices seen per hour (last 24 h)</h2>{}<h2>Present and missing</h2>{}",
        page.total,
        bar_chart("chart-firmware", &v(fw)),
        bar_chart("chart-phases", &v(phases)),
        bar_chart("chart-hours", &v(hours)),
        bar_chart(
            "chart-missing",
            &[("present".into(), present), ("missing".into(), missing)]
        ),
    );
    layout(&op, "Fleet overview", &b)
}

/// GET /admin/site: phases, classes, environments, snippets with age and grace countdown.
pub async fn site(State(app): State<AppState>, req: Request) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let b = super::site_view::render(&app, &op.csrf, None);
    layout(&op, "Site", &b)
}

/// GET /admin/audit: the newest 200 operator actions.
pub async fn audit_page(State(app): State<AppState>, req: Request) -> Response {
    let op = match require(&app, req.headers()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let list = app.store().audit_recent(200).await.unwrap_or_default();
    let mut b = String::from("<table id=\"audit\"><tr><th>Time</th><th>User</th><th>Action</th><th>Target</th><th>Detail</th></tr>");
    for e in list {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&time(e.time)),
            esc(&e.user),
            esc(&e.action),
            esc(&e.target),
            esc(&e.detail)
        );
    }
    b.push_str("</table>");
    layout(&op, "Audit log", &b)
}
