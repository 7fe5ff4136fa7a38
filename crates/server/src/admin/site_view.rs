//! The site page: phases, classes, environments, snippets with their age and grace countdown.

use std::fmt::Write as _;

use super::{ago, esc};
use crate::app::{now, AppState};

/// The body of `/admin/site`.
pub fn render(app: &AppState) -> String {
    let cfg = &app.site().config;
    let mut b = format!(
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
    if let Some(dir) = app.site().path(&cfg.times.dir) {
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
    b.push_str("</table><p>Configuration changes are read when `autoprov serve` starts: restart it to reload the site.</p>");
    b
}
