//! The operators' service layer over the device inventory: one set of functions for the web UI
//! ([`crate::admin`]), the REST API ([`crate::api`]) and the CLI (`autoprov devices ...`).
//! Decisions about devices stay in `autoprov-core` (the filter in
//! [`autoprov_core::filter`]); this module gathers, sorts and pages. The device list filters,
//! sorts and pages over an inventory index ([`autoprov_core::inventory`]: the server's
//! [`crate::inventory::InventoryIndex`], or one built for the call) and loads full states only
//! for the rows of the page.

use std::path::PathBuf;

use autoprov_core::filter;
use autoprov_core::innovaphone::backup;
use autoprov_core::inventory::{Inventory, InventoryPage, InventoryQuery, SortKey};
use autoprov_core::show;
use autoprov_core::state::DeviceState;
use autoprov_core::Site;
use autoprov_store::Store;
use serde::Serialize;

use crate::inventory::{IndexQuery, InventoryIndex};

/// Problems of a service call, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Store(#[from] autoprov_store::StoreError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

/// One row of the device list.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    pub sn: String,
    pub vendor: String,
    pub model: String,
    pub name: String,
    pub ip: String,
    pub proxy: String,
    pub phase: String,
    pub classes: String,
    pub environments: String,
    pub firmware: String,
    pub firmware_target: String,
    pub bootcode: String,
    pub seen: i64,
    pub last_backup: Option<i64>,
    pub certstat: String,
    pub missing: bool,
    /// The query `show` columns (seed 003), in configuration order. Filled by
    /// [`list_devices`] for the rows of the page and by [`row_with_show`]; empty from [`row`].
    pub show: Vec<ShowValue>,
}

/// One `show` column of a device: the title and the string value of its XPath expression
/// over the device state (empty when the data is missing or the expression is bad).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShowValue {
    pub title: String,
    pub value: String,
}

/// A page of the device list.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePage {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// The titles of the query `show` columns (each row's `show` has one value per title).
    pub show_titles: Vec<String>,
    pub devices: Vec<DeviceRow>,
}

/// How to list devices.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: String,
    /// Column to sort by (a [`DeviceRow`] field name); default `sn`. A leading `-` sorts
    /// descending.
    pub sort: String,
    pub offset: usize,
    /// 0 = all.
    pub limit: usize,
}

/// Columns [`list_devices`] can sort by.
pub const SORT_COLUMNS: &[&str] = &[
    "sn",
    "vendor",
    "model",
    "name",
    "ip",
    "phase",
    "firmware",
    "seen",
    "last_backup",
];

fn s(o: &Option<String>) -> String {
    o.clone().unwrap_or_default()
}

/// The list row of a stored device.
pub fn row(site: &Site, d: &DeviceState, now: i64) -> DeviceRow {
    DeviceRow {
        sn: d.sn.clone(),
        vendor: d.vendor.clone().unwrap_or_else(|| "innovaphone".into()),
        model: d
            .model
            .clone()
            .or_else(|| d.device.device_type.clone())
            .unwrap_or_default(),
        name: s(&d.device.hwid),
        ip: s(&d.device.ip),
        proxy: s(&d.device.proxy),
        phase: d
            .device
            .phase
            .clone()
            .or_else(|| d.phase.clone())
            .unwrap_or_default(),
        classes: s(&d.device.classes),
        environments: s(&d.device.environments),
        firmware: s(&d.firmware.build),
        firmware_target: s(&d.firmware.requested),
        bootcode: s(&d.bootcode.build),
        seen: d.seen,
        last_backup: d.device.backup,
        certstat: s(&d.device.certstat),
        missing: filter::is_missing(d, now, site.config.status.missing),
        show: Vec::new(),
    }
}

/// The titles of the site's query `show` columns, in configuration order.
pub fn show_titles(site: &Site) -> Vec<String> {
    show::show_columns(&site.config)
        .into_iter()
        .map(|c| c.title)
        .collect()
}

fn show_pairs(columns: &[show::ShowColumn], values: Vec<String>) -> Vec<ShowValue> {
    columns
        .iter()
        .zip(values)
        .map(|(c, value)| ShowValue {
            title: c.title.clone(),
            value,
        })
        .collect()
}

/// The `show` values of a fully loaded device state.
pub fn show_values(site: &Site, d: &DeviceState) -> Vec<ShowValue> {
    let columns = show::show_columns(&site.config);
    if columns.is_empty() {
        return Vec::new();
    }
    show_pairs(&columns, show::evaluate(d, &columns))
}

/// [`row`] with the `show` values (`d` must be fully loaded, with its query results).
pub fn row_with_show(site: &Site, d: &DeviceState, now: i64) -> DeviceRow {
    let mut r = row(site, d, now);
    r.show = show_values(site, d);
    r
}

/// The sort column and direction of `sort` (`-` prefix = descending; empty = `sn`).
fn sort_key(sort: &str) -> Result<(SortKey, bool), ServiceError> {
    let (desc, col) = match sort.strip_prefix('-') {
        Some(c) => (true, c),
        None => (false, sort),
    };
    let col = if col.is_empty() { "sn" } else { col };
    match SortKey::parse(col) {
        Some(k) if SORT_COLUMNS.contains(&col) => Ok((k, desc)),
        _ => Err(ServiceError::Invalid(format!(
            "cannot sort by '{col}': use one of {}",
            SORT_COLUMNS.join(", ")
        ))),
    }
}

fn index_query(site: &Site, q: &ListQuery, now: i64) -> Result<IndexQuery, ServiceError> {
    let (sort, descending) = sort_key(&q.sort)?;
    Ok(IndexQuery {
        filter: q.filter.clone(),
        sort,
        descending,
        offset: q.offset,
        limit: q.limit,
        now,
        missing_after: site.config.status.missing,
    })
}

/// Filter (seed 003 semantics), sort and page the stored devices: reads every device into a
/// temporary [`Inventory`] (the CLI; the server before its index is loaded).
pub async fn list_devices(
    site: &Site,
    store: &Store,
    q: &ListQuery,
    now: i64,
) -> Result<DevicePage, ServiceError> {
    let iq = index_query(site, q, now)?;
    let all = store.list_shallow().await?;
    // Seconds of work for a million devices: not on an async worker.
    let page = tokio::task::spawn_blocking(move || {
        let inv = Inventory::from_states(&all);
        drop(all);
        inv.query(&InventoryQuery {
            filter: &iq.filter,
            sort: iq.sort,
            descending: iq.descending,
            offset: iq.offset,
            limit: iq.limit,
            now,
            missing_after: iq.missing_after,
        })
    })
    .await
    .map_err(|e| ServiceError::Io(format!("device list failed: {e}")))?;
    finish_page(site, store, q, page, now).await
}

/// [`list_devices`] over the server's inventory index (the web UI, the REST API); reads the
/// store instead while the index is still loading.
pub async fn list_devices_indexed(
    site: &Site,
    store: &Store,
    index: &InventoryIndex,
    q: &ListQuery,
    now: i64,
) -> Result<DevicePage, ServiceError> {
    let iq = index_query(site, q, now)?;
    match index.query(iq).await {
        Some(page) => finish_page(site, store, q, page, now).await,
        None => list_devices(site, store, q, now).await,
    }
}

/// The rows of an index page, with the query `show` columns.
async fn finish_page(
    site: &Site,
    store: &Store,
    q: &ListQuery,
    page: InventoryPage,
    now: i64,
) -> Result<DevicePage, ServiceError> {
    let total = page.total;
    let offset = q.offset.min(total);
    let limit = if q.limit == 0 { total } else { q.limit };
    let mut devices: Vec<DeviceRow> = page
        .rows
        .iter()
        .map(|s| row(site, &s.to_state(), now))
        .collect();
    // The show columns need the query results, which the index leaves out: load the rows of
    // this page only, and compile the expressions once for all of them.
    let columns = show::show_columns(&site.config);
    if !columns.is_empty() {
        let mut states = Vec::with_capacity(devices.len());
        for r in &devices {
            let st = store.load(&r.sn).await?;
            states.push(st.unwrap_or_else(|| DeviceState::new(&r.sn, r.seen)));
        }
        for (r, values) in devices
            .iter_mut()
            .zip(show::evaluate_all(&states, &columns))
        {
            r.show = show_pairs(&columns, values);
        }
    }
    Ok(DevicePage {
        total,
        offset,
        limit,
        show_titles: columns.into_iter().map(|c| c.title).collect(),
        devices,
    })
}

/// The stored state of `sn`.
pub async fn show_device(store: &Store, sn: &str) -> Result<DeviceState, ServiceError> {
    store
        .load(sn)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("device {sn}")))
}

/// Forget `sn` (its state only; backups and certificate files stay on disk).
pub async fn forget_device(store: &Store, sn: &str) -> Result<(), ServiceError> {
    if store.delete(sn).await? {
        Ok(())
    } else {
        Err(ServiceError::NotFound(format!("device {sn}")))
    }
}

/// Ask the phone `sn` to re-read its configuration now (SIP NOTIFY check-sync, via
/// [`crate::sip::notify`]); the outcome is also recorded in the device's messages.
pub async fn resync_device(app: &crate::AppState, sn: &str) -> Result<String, ServiceError> {
    use crate::sip::notify::{self, NotifyError, NotifyRequest, Selection};
    let req = NotifyRequest {
        selection: Selection::Device(sn.to_string()),
        to: None,
        brand: None,
        action: autoprov_core::discovery::NotifyAction::CheckSync,
        rate: None,
    };
    match notify::run(&app.site(), app.store(), Some(app), &req, |_| {}).await {
        Ok(reports) => Ok(reports
            .iter()
            .map(|r| r.outcome.to_string())
            .collect::<Vec<_>>()
            .join("; ")),
        Err(NotifyError::UnknownDevice(_)) => Err(ServiceError::NotFound(format!("device {sn}"))),
        Err(e) => Err(ServiceError::Invalid(e.to_string())),
    }
}

/// One stored backup of a device.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub name: String,
    pub index: u64,
    pub size: u64,
    pub modified: i64,
}

fn backup_dir(site: &Site, hwid: &str) -> Result<PathBuf, ServiceError> {
    let dir = &site.config.backup.dir;
    if dir.is_empty() {
        return Err(ServiceError::Invalid(
            "backups are off: set backup.dir in autoprov.toml".into(),
        ));
    }
    if hwid.is_empty()
        || !hwid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || hwid.starts_with('.')
    {
        return Err(ServiceError::Invalid(format!(
            "name '{hwid}' cannot be a backup folder"
        )));
    }
    let base = site.path(dir).ok_or_else(|| {
        ServiceError::Invalid(format!("backup.dir '{dir}' is not inside the site"))
    })?;
    Ok(base.join(hwid))
}

/// The backups of device `d` (by its name/hwid), oldest first.
pub fn list_backups(site: &Site, d: &DeviceState) -> Result<Vec<BackupInfo>, ServiceError> {
    let hwid = d.device.hwid.clone().unwrap_or_default();
    if hwid.is_empty() {
        return Ok(Vec::new());
    }
    let loc = backup_dir(site, &hwid)?;
    let rd = match std::fs::read_dir(&loc) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ServiceError::Io(format!(
                "cannot list {}: {e}",
                loc.display()
            )))
        }
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(index) = backup::index_of(&name, &hwid) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        out.push(BackupInfo {
            name,
            index,
            size: meta.len(),
            modified,
        });
    }
    out.sort_by_key(|b| (b.modified, b.index));
    Ok(out)
}

/// The content of backup `name` of device `d` (only names [`list_backups`] lists).
pub fn read_backup(site: &Site, d: &DeviceState, name: &str) -> Result<Vec<u8>, ServiceError> {
    let list = list_backups(site, d)?;
    let Some(b) = list.iter().find(|b| b.name == name) else {
        return Err(ServiceError::NotFound(format!("backup {name} of {}", d.sn)));
    };
    let hwid = d.device.hwid.clone().unwrap_or_default();
    let path = backup_dir(site, &hwid)?.join(&b.name);
    std::fs::read(&path)
        .map_err(|e| ServiceError::Io(format!("cannot read {}: {e}", path.display())))
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffLine {
    /// `' '` same, `'-'` only in the old, `'+'` only in the new.
    pub op: char,
    pub text: String,
}

/// A line diff of `old` and `new` (longest common subsequence; inputs over 4000 lines each are
/// compared line by line instead).
pub fn diff_lines(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut out = Vec::new();
    let line = |op: char, t: &str| DiffLine {
        op,
        text: t.to_string(),
    };
    if a.len() > 4000 || b.len() > 4000 {
        for i in 0..a.len().max(b.len()) {
            match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) if x == y => out.push(line(' ', x)),
                (x, y) => {
                    if let Some(x) = x {
                        out.push(line('-', x));
                    }
                    if let Some(y) = y {
                        out.push(line('+', y));
                    }
                }
            }
        }
        return out;
    }
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(line(' ', a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(line('-', a[i]));
            i += 1;
        } else {
            out.push(line('+', b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|t| line('-', t)));
    out.extend(b[j..].iter().map(|t| line('+', t)));
    out
}

/// Diff two backups of device `d`.
pub fn diff_backups(
    site: &Site,
    d: &DeviceState,
    old: &str,
    new: &str,
) -> Result<Vec<DiffLine>, ServiceError> {
    let a = read_backup(site, d, old)?;
    let b = read_backup(site, d, new)?;
    Ok(diff_lines(
        &String::from_utf8_lossy(&a),
        &String::from_utf8_lossy(&b),
    ))
}

/// The certificate roll-out files of a device.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// The CN the pending CSR asks for, or why it cannot be used; `None` without a CSR.
    pub csr: Option<String>,
    pub csr_error: Option<String>,
    /// The signed certificate waiting for the device (subject CN, not after).
    pub signed_cn: Option<String>,
    pub signed_not_after: Option<i64>,
    pub certstat: String,
}

/// The certificate state of `sn`.
pub fn cert_info(site: &Site, d: &DeviceState) -> CertInfo {
    let mut info = CertInfo {
        csr: None,
        csr_error: None,
        signed_cn: None,
        signed_not_after: None,
        certstat: s(&d.device.certstat),
    };
    match crate::rollout::pending_csr(site, &d.sn) {
        Ok(c) => info.csr = Some(c.subject_cn),
        Err(crate::rollout::RolloutError::NoCsr { .. })
        | Err(crate::rollout::RolloutError::Off) => {}
        Err(e) => info.csr_error = Some(e.to_string()),
    }
    if let Ok(f) = crate::rollout::device_files(site, &d.sn) {
        if let Ok(bytes) = std::fs::read(&f.signed) {
            if let Ok(certs) = crate::pki::read_certs(&bytes, "signed") {
                if let Ok(sum) = crate::pki::summarize(&certs[0]) {
                    info.signed_cn = Some(sum.subject_cn);
                    info.signed_not_after = Some(sum.not_after);
                }
            }
        }
    }
    info
}

/// The pending CSR of `sn` as PEM.
pub fn csr_pem(site: &Site, sn: &str) -> Result<String, ServiceError> {
    let csr = crate::rollout::pending_csr(site, sn).map_err(|e| match e {
        crate::rollout::RolloutError::NoCsr { .. } => {
            ServiceError::NotFound(format!("CSR of {sn}"))
        }
        other => ServiceError::Invalid(other.to_string()),
    })?;
    Ok(crate::uploads::der_to_pem_request(&csr.der))
}

/// Install a signed certificate for `sn` (PEM or DER).
pub fn upload_signed(site: &Site, sn: &str, bytes: &[u8]) -> Result<String, ServiceError> {
    crate::rollout::install_signed(site, sn, bytes)
        .map(|s| s.subject_cn)
        .map_err(|e| ServiceError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changes() {
        let d = diff_lines("a\nb\nc\n", "a\nx\nc\n");
        let ops: String = d.iter().map(|l| l.op).collect();
        assert_eq!(ops, " -+ ");
        assert_eq!(d[2].text, "x");
    }

    /// `cargo test -p autoprov-server --release -- --ignored list_100k --nocapture`: the list
    /// of 100k devices, filtered, sorted and paged.
    #[tokio::test]
    #[ignore]
    async fn list_100k() {
        let store = Store::open_memory().await.unwrap();
        for i in 0..100_000u32 {
            let mut d = DeviceState {
                sn: format!(
                    "00-90-33-{:02x}-{:02x}-{:02x}",
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255
                ),
                seen: 1000 + i as i64,
                ..Default::default()
            };
            d.device.ip = Some(format!("172.16.{}.{}", (i >> 8) & 255, i & 255));
            d.device.device_type = Some(if i % 3 == 0 { "IP222" } else { "IP232" }.into());
            store.save(&d).await.unwrap();
        }
        let site = Site {
            dir: std::path::PathBuf::from("/nonexistent"),
            config: Default::default(),
        };
        let t = std::time::Instant::now();
        let q = ListQuery {
            filter: "172.16. ip222".into(),
            sort: "-seen".into(),
            offset: 0,
            limit: 100,
        };
        let all = store.list_shallow().await.unwrap();
        eprintln!("100k devices loaded in {:?}", t.elapsed());
        assert_eq!(all.len(), 100_000);
        let t = std::time::Instant::now();
        let page = list_devices(&site, &store, &q, 2000).await.unwrap();
        eprintln!("100k devices: {} matched in {:?}", page.total, t.elapsed());
        assert_eq!(page.total, 33_334);
    }
}
