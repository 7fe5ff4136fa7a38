//! The site page: phases, classes, environments, snippets with their age and grace countdown,
//! and the "Reload site" button (`POST /admin/site/reload`).

use std::fmt::Write as _;

use axum::extract::{Request, State};
use axum::response::Response;

use super::{ago, auth, esc, layout, require_form};
use crate::app::{now, AppState};
use crate::reload::{ReloadError, ReloadReport};

/// The body of `/admin/site`; `reloaded` is the outcome of a reload just done.
pub fn render(
    app: &AppState,
    csrf: &str,
    reloaded: Option<&Result<ReloadReport, ReloadError>>,
) -> String {
    let site = app.site();
    let cfg = &site.config;
    let mut b = String::new();
    match reloaded {
        None => {}
        Some(Ok(r)) => {
            b.push_str("<div id=\"reload-result\" class=\"add\"><p>Site reloaded.</p>");
            for l in &r.restart_needed {
                let _ = write!(b, "<p class=\"restart\">{}</p>", esc(l));
            }
            if !r.warnings.is_empty() {
                let _ = write!(b, "<pre>{}</pre>", esc(&r.warnings.join("\n")));
            }
            b.push_str("</div>");
        }
        Some(Err(e)) => {
            let _ = write!(
                b,
                "<div id=\"reload-result\" class=\"del\"><p>Reload refused, the running site stays:</p><pre>{}</pre></div>",
                esc(&e.0)
            );
        }
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/admin/site/reload\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button id=\"reload\">Reload site</button> (re-reads autoprov.toml and the firmware catalogue; \
         listeners, TLS files and the database need a restart)</form>",
        esc(csrf)
    );
    let _ = write!(
        b,
        "<p>Site directory: {}</p><h2>Phases</h2><table id=\"phases\"><tr><th>Phase</th><th>Seq</th></tr>",
        esc(&app.site_dir().display().to_string())
    );
    for p in &cfg.phases {
        let _ = write!(b, "<tr><td>{}</td><td>{}</td></tr>", esc(&p.id), p.seq);
    }
    b.push_str("</table><h2>Classes</h2><table id=\"classes\">");
    for c in &cfg.classes {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&c.id),
            esc(&c.models.join(", "))
        );
    }
    b.push_str("</table><h2>Environments</h2><table id=\"environments\">");
    for e in &cfg.environments {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>implies {}</td></tr>",
            esc(&e.id),
            esc(&e.implies.join(", "))
        );
    }
    let grace = cfg.times.grace as i64;
    let _ = write!(
        b,
        "</table><h2>Snippets ({})</h2><p>Grace period: {grace} s (newer files are not delivered yet).</p>\
         <table id=\"snippets\"><tr><th>File</th><th>Changed</th><th>Grace</th></tr>",
        esc(&cfg.times.dir)
    );
    let t = now();
    let mut files: Vec<(String, i64)> = Vec::new();
    if let Some(dir) = site.path(&cfg.times.dir) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let Ok(m) = e.metadata() else { continue };
                if !m.is_file() {
                    continue;
                }
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|x| x.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|x| x.as_secs() as i64)
                    .unwrap_or(0);
                files.push((e.file_name().to_string_lossy().into_owned(), mtime));
            }
        }
    }
    files.sort();
    for (name, mtime) in files {
        let left = grace - (t - mtime);
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&name),
            esc(&ago(mtime)),
            if left > 0 {
                format!("waiting {left} s")
            } else {
                "live".to_string()
            }
        );
    }
    b.push_str("</table><h2>Firmware targets</h2><table id=\"firmware\"><tr><th>Vendor</th><th>Model</th><th>Version</th><th>Groups</th></tr>");
    let _ = write!(
        b,
        "<tr><td>innovaphone</td><td>*</td><td>{} (boot code {})</td><td></td></tr>",
        esc(&cfg.master.firmware),
        esc(&cfg.master.bootcode)
    );
    for t in &cfg.firmware.targets {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.vendor),
            esc(&t.model),
            esc(&t.version),
            esc(&t.groups.join(", "))
        );
    }
    b.push_str("</table>");
    b
}

/// POST /admin/site/reload: re-read and check the site, swap it in when it has no errors.
pub async fn reload(State(app): State<AppState>, req: Request) -> Response {
    let (op, _, _) = match require_form(&app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = app.reload_site().await;
    audit_reload(&app, &op.user, "ui", &r).await;
    layout(&op, "Site", &render(&app, &op.csrf, Some(&r)))
}

/// The audit entry of a reload (`via`: ui, api, sighup).
pub async fn audit_reload(
    app: &AppState,
    user: &str,
    via: &str,
    r: &Result<ReloadReport, ReloadError>,
) {
    let detail = match r {
        Ok(rep) if rep.restart_needed.is_empty() => format!("{via}: ok"),
        Ok(rep) => format!("{via}: ok; {}", rep.restart_needed.join("; ")),
        Err(e) => format!("{via}: refused: {}", e.0),
    };
    let action = if r.is_ok() {
        "reload-site"
    } else {
        "reload-site-failed"
    };
    auth::audit(app, user, action, "site", &detail).await;
}
