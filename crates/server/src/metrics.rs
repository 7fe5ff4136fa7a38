//! `GET /metrics`: what an operator watches in the worst minute (a boot storm, a rollout),
//! in the Prometheus text format (version 0.0.4), for an API token or a logged-in session.
//!
//! Counted on the request path (one relaxed atomic add per device request, on counters
//! shared by all workers): device requests by route and status class, and the requests
//! refused at once with 503 because a budget was spent (`[server] max_config_requests`,
//! `[firmware] max_downloads`). Everything else is read when scraped: the budgets in use,
//! the write-behind queue and its batches, the device-state and render caches (sizes, hits,
//! misses), the inventory index, and the process (resident memory, start time).
//!
//! Names follow Prometheus' conventions (`_total` counters, base units, `autoprov_` prefix);
//! they are part of the operator interface and documented in the README.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use crate::AppState;

/// The routes of device requests, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The innovaphone update script.
    Update,
    /// Other vendors' provisioning files.
    Vendor,
    /// The firmware catalogue (`/firmware/...`).
    Catalog,
    /// innovaphone firmware files (`.../fw/...`).
    Fw,
}

const ROUTES: [(Route, &str); 4] = [
    (Route::Update, "update"),
    (Route::Vendor, "vendor"),
    (Route::Catalog, "catalog"),
    (Route::Fw, "fw"),
];

/// Status classes 1xx..5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The budget a refused request found spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// `[server] max_config_requests`.
    Config,
    /// `[firmware] max_downloads`.
    Firmware,
    /// `[server] max_connections`: requests on connections past it.
    Connections,
}

const BUDGETS: [(Budget, &str); 3] = [
    (Budget::Config, "config"),
    (Budget::Firmware, "firmware"),
    (Budget::Connections, "connections"),
];

/// The counters of the request path. Relaxed atomics: a scrape sees each counter's own
/// latest value, which is all Prometheus asks.
pub struct Metrics {
    requests: [[AtomicU64; CLASSES.len()]; ROUTES.len()],
    refused: [AtomicU64; BUDGETS.len()],
    /// Unix seconds when the server state was made.
    started: i64,
    /// The connection budget of the running listeners (set when they start).
    connections: std::sync::Mutex<std::sync::Weak<crate::listen::ConnBudget>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            refused: Default::default(),
            started: crate::app::now(),
            connections: Default::default(),
        }
    }
}

impl Metrics {
    /// Count one answered device request of `route`.
    pub fn answered(&self, route: Route, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[route as usize][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one request refused with 503 because `budget` was spent.
    pub fn refused(&self, budget: Budget) {
        self.refused[budget as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Report the open connections of `budget` (the listeners' budget) from now on.
    pub fn watch_connections(&self, budget: &std::sync::Arc<crate::listen::ConnBudget>) {
        *self.connections.lock().unwrap_or_else(|p| p.into_inner()) =
            std::sync::Arc::downgrade(budget);
    }

    /// The listeners' connection budget, while they run.
    fn connection_budget(&self) -> Option<std::sync::Arc<crate::listen::ConnBudget>> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
    }

    /// Answered requests of `route` in status class `class` (1..=5) so far.
    pub fn answered_count(&self, route: Route, class: usize) -> u64 {
        self.requests[route as usize][class.clamp(1, 5) - 1].load(Ordering::Relaxed)
    }

    /// Requests refused for `budget` so far.
    pub fn refused_count(&self, budget: Budget) -> u64 {
        self.refused[budget as usize].load(Ordering::Relaxed)
    }
}

/// One metric family in the text format.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn head(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value as the text format wants it: `\`, `"` and line feeds escaped.
fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

/// A single-sample family.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    Family::head(out, name, kind, help).sample(name, &[], value);
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`), if readable.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system; no pointers are passed.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096))
}

/// The metrics of `app` in the text format.
pub fn render(app: &AppState) -> String {
    let m = app.metrics();
    let mut out = String::with_capacity(4096);

    let name = "autoprov_build_info";
    Family::head(&mut out, name, "gauge", "Always 1; the version in a label.").sample(
        name,
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    single(
        &mut out,
        "autoprov_start_time_seconds",
        "gauge",
        "When the server started, in Unix seconds.",
        m.started,
    );
    if let Some(rss) = resident_bytes() {
        single(
            &mut out,
            "autoprov_resident_memory_bytes",
            "gauge",
            "Resident memory of the server process.",
            rss,
        );
    }

    let name = "autoprov_requests_total";
    let mut f = Family::head(
        &mut out,
        name,
        "counter",
        "Device requests answered, by route and status class (refusals for a spent budget included).",
    );
    for (route, label) in ROUTES {
        for (i, class) in CLASSES.iter().enumerate() {
            f.sample(
                name,
                &[("route", label), ("status", class)],
                m.answered_count(route, i + 1),
            );
        }
    }

    let name = "autoprov_refused_total";
    let mut f = Family::head(
        &mut out,
        name,
        "counter",
        "Requests answered 503 with Retry-After at once because their budget was spent.",
    );
    for (budget, label) in BUDGETS {
        f.sample(name, &[("budget", label)], m.refused_count(budget));
    }

    let (config_used, config_max) = app.config_budget();
    let (fw_used, fw_max) = app.firmware().download_budget();
    let name = "autoprov_budget_in_use";
    let mut f = Family::head(
        &mut out,
        name,
        "gauge",
        "Slots of a request budget taken now.",
    );
    f.sample(name, &[("budget", "config")], config_used);
    f.sample(name, &[("budget", "firmware")], fw_used);
    let connections = m.connection_budget();
    if let Some(c) = &connections {
        f.sample(name, &[("budget", "connections")], c.in_use().0);
    }
    let name = "autoprov_budget_slots";
    let mut f = Family::head(
        &mut out,
        name,
        "gauge",
        "Size of a request budget ([server] max_config_requests, [firmware] max_downloads).",
    );
    f.sample(name, &[("budget", "config")], config_max);
    f.sample(name, &[("budget", "firmware")], fw_max);
    if let Some(c) = &connections {
        f.sample(name, &[("budget", "connections")], c.max);
        single(
            &mut out,
            "autoprov_connections_refusing",
            "gauge",
            "Connections past [server] max_connections being answered 503 now.",
            c.in_use().1,
        );
    }
    single(
        &mut out,
        "autoprov_firmware_sendfile_bytes_total",
        "counter",
        "Firmware bytes sent with sendfile(2) (plain HTTP; TLS downloads are not counted).",
        crate::sendfile::bytes_sent(),
    );

    let store = app.store();
    single(
        &mut out,
        "autoprov_state_queue",
        "gauge",
        "Device states waiting in the write-behind queue.",
        store.queued_states(),
    );
    if let Some(wb) = store.write_behind_stats() {
        single(
            &mut out,
            "autoprov_state_batches_total",
            "counter",
            "Write-behind batches that wrote device states.",
            wb.batches,
        );
        single(
            &mut out,
            "autoprov_state_writes_total",
            "counter",
            "Device states written by the write-behind.",
            wb.written,
        );
        single(
            &mut out,
            "autoprov_state_batch_seconds_total",
            "counter",
            "Time spent writing write-behind batches.",
            format_args!("{:.6}", wb.busy.as_secs_f64()),
        );
        single(
            &mut out,
            "autoprov_state_batch_failures_total",
            "counter",
            "Write-behind batches that failed (the states stay queued and are retried).",
            wb.failures,
        );
        let name = "autoprov_state_cache_lookups_total";
        let mut f = Family::head(
            &mut out,
            name,
            "counter",
            "Device state loads by where the answer came from: memory (queued or clean copy), absent (a device known to be new), or the database.",
        );
        f.sample(name, &[("result", "memory")], wb.hits);
        f.sample(name, &[("result", "absent")], wb.absent);
        f.sample(name, &[("result", "database")], wb.misses);
    }
    single(
        &mut out,
        "autoprov_state_cache_entries",
        "gauge",
        "Written device states kept in memory ([server] state_cache_mib).",
        store.clean_states(),
    );
    single(
        &mut out,
        "autoprov_state_cache_bytes",
        "gauge",
        "Estimated bytes of the device states kept in memory.",
        store.clean_state_bytes(),
    );

    let renders = app.renders();
    let (entries, bytes) = renders.usage();
    let (hits, misses) = renders.lookups();
    single(
        &mut out,
        "autoprov_render_cache_entries",
        "gauge",
        "Rendered vendor files kept ([server] render_cache_mib).",
        entries,
    );
    single(
        &mut out,
        "autoprov_render_cache_bytes",
        "gauge",
        "Bytes of the rendered vendor files kept.",
        bytes,
    );
    let name = "autoprov_render_cache_lookups_total";
    let mut f = Family::head(
        &mut out,
        name,
        "counter",
        "Lookups of rendered vendor files: hit (answered without rendering) or miss.",
    );
    f.sample(name, &[("result", "hit")], hits);
    f.sample(name, &[("result", "miss")], misses);

    if let Some(n) = app.inventory().devices() {
        single(
            &mut out,
            "autoprov_devices",
            "gauge",
            "Devices in the inventory index.",
            n,
        );
    }
    out
}

/// `GET /metrics`: the text for an operator (API token or session), else 401.
pub(crate) async fn handle(app: AppState, headers: &axum::http::HeaderMap) -> Response {
    if crate::admin::auth::operator(&app, headers).await.is_none() {
        let mut r = crate::respond::text(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <token> (autoprov admin token)\n".into(),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"autoprov\""),
        );
        return r;
    }
    let text = render(&app);
    let mut r = crate::respond::text(StatusCode::OK, text);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_class() {
        let m = Metrics::default();
        m.answered(Route::Update, StatusCode::OK);
        m.answered(Route::Update, StatusCode::OK);
        m.answered(Route::Vendor, StatusCode::NOT_MODIFIED);
        m.answered(Route::Fw, StatusCode::SERVICE_UNAVAILABLE);
        m.refused(Budget::Firmware);
        assert_eq!(m.answered_count(Route::Update, 2), 2);
        assert_eq!(m.answered_count(Route::Vendor, 3), 1);
        assert_eq!(m.answered_count(Route::Fw, 5), 1);
        assert_eq!(m.answered_count(Route::Catalog, 2), 0);
        assert_eq!(m.refused_count(Budget::Firmware), 1);
        assert_eq!(m.refused_count(Budget::Config), 0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("plain"), "plain");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
