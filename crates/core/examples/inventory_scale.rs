//! Scale demonstration of the device inventory index (not a test: timings depend on the
//! machine). Fills an [`Inventory`] with N synthetic devices and prints the median time of
//! typical list queries and of changes, and the memory growth per device.
//!
//! `cargo run --release -p autoprov-core --example inventory_scale -- 1000000`

use std::time::{Duration, Instant};

use autoprov_core::inventory::{Inventory, InventoryQuery, SortKey};
use autoprov_core::state::DeviceState;

/// Resident set size in bytes (Linux `/proc/self/statm`; 0 elsewhere).
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A deterministic pseudo-random generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Device `i`: a realistic mix of vendors, models, networks, phases and firmware.
fn device(i: u64, r: &mut Rng) -> DeviceState {
    const MODELS: &[(&str, &str, &str)] = &[
        ("innovaphone", "IP222", "00-90-33"),
        ("innovaphone", "IP232", "00-90-33"),
        ("innovaphone", "IP112", "00-90-33"),
        ("innovaphone", "IP811", "00-90-33"),
        ("yealink", "T46U", "80-5e-c0"),
        ("yealink", "T54W", "24-9a-d8"),
        ("snom", "D785", "00-04-13"),
        ("snom", "D735", "00-04-13"),
        ("polycom", "VVX450", "64-16-7f"),
        ("gigaset", "N670", "7c-2f-80"),
        ("grandstream", "GXP2170", "c0-74-ad"),
        ("fanvil", "X6U", "0c-38-3e"),
    ];
    let (vendor, model, oui) = MODELS[r.below(MODELS.len() as u64) as usize];
    let sn = format!(
        "{oui}-{:02x}-{:02x}-{:02x}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    );
    let net = match r.below(10) {
        0..=4 => format!("172.16.{}.{}", r.below(256), 1 + r.below(254)),
        5..=7 => format!("10.{}.{}.{}", r.below(256), r.below(256), 1 + r.below(254)),
        _ => format!("192.168.{}.{}", r.below(256), 1 + r.below(254)),
    };
    let mut d = DeviceState {
        sn: sn.clone(),
        seen: 1_700_000_000 - r.below(30 * 86_400) as i64,
        first_seen: Some(1_690_000_000),
        ..Default::default()
    };
    d.device.ip = Some(net.clone());
    if r.below(4) == 0 {
        d.device.realip = Some(format!("203.0.113.{}", r.below(256)));
    }
    d.device.proxy = Some(format!("pbx{}.example.com", r.below(20)));
    d.device.hwid = Some(format!("{model}-{}", &sn[9..]));
    d.device.device_type = Some(model.to_string());
    d.device.classes = Some(["Phone", "Phone,Lobby", "Gateway"][r.below(3) as usize].into());
    d.device.environments = Some(["prod", "test", "lab"][r.below(3) as usize].into());
    d.device.certstat = Some(["ok", "pending", ""][r.below(3) as usize].into());
    d.device.backup = (r.below(2) == 0).then(|| 1_699_000_000 + r.below(86_400) as i64);
    if vendor == "innovaphone" {
        d.phase = Some(["done", "firmware", "bootcode", "update"][r.below(4) as usize].into());
        d.firmware.build = Some(["13r2 sr16", "13r3 sr4", "14r1"][r.below(3) as usize].into());
        d.firmware.requested = Some("14r1".into());
        d.bootcode.build = Some(["13r2", "14r1"][r.below(2) as usize].into());
    } else {
        d.vendor = Some(vendor.to_string());
        d.model = Some(model.to_string());
        d.firmware.build = Some(format!(
            "{}.{}.0.{}",
            60 + r.below(30),
            r.below(5),
            r.below(99)
        ));
    }
    d
}

/// Median of `runs` runs of `f`; `f`'s last result is returned too.
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[runs / 2], last.expect("runs > 0"))
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut r = Rng(1);
    let before = rss();
    let t = Instant::now();
    let mut inv = Inventory::new();
    for i in 0..n {
        inv.upsert(&device(i, &mut r));
    }
    let build = t.elapsed();
    let after = rss();
    println!("{n} devices indexed in {build:.2?}");
    println!(
        "RSS growth: {:.1} MiB, {:.0} bytes per device",
        (after - before) as f64 / 1048576.0,
        (after - before) as f64 / n as f64
    );
    let now = 1_700_000_000;
    let q = |filter: &'static str, sort: SortKey, descending: bool, offset: usize| InventoryQuery {
        filter,
        sort,
        descending,
        offset,
        limit: 100,
        now,
        missing_after: 7 * 86_400,
    };
    let runs = 7;
    let cases: Vec<(&str, InventoryQuery)> = vec![
        (
            "empty filter (count + page 1 by sn)",
            q("", SortKey::Sn, false, 0),
        ),
        ("'172.16.' alone", q("172.16.", SortKey::Sn, false, 0)),
        ("'ip222' alone", q("ip222", SortKey::Sn, false, 0)),
        ("'172.16. ip222'", q("172.16. ip222", SortKey::Sn, false, 0)),
        (
            "MAC fragment '00-90-33-0a'",
            q("00-90-33-0a", SortKey::Sn, false, 0),
        ),
        ("MAC fragment '3f-2a'", q("3f-2a", SortKey::Sn, false, 0)),
        ("'missing'", q("missing", SortKey::Sn, false, 0)),
        ("'16' (many hits)", q("16", SortKey::Sn, false, 0)),
        ("sort -seen, page 1", q("", SortKey::Seen, true, 0)),
        (
            "sort -seen, deep page (offset n/2)",
            q("", SortKey::Seen, true, n as usize / 2),
        ),
        ("sort name, page 1", q("", SortKey::Name, false, 0)),
        (
            "sort ip, deep page (offset n/2)",
            q("", SortKey::Ip, false, n as usize / 2),
        ),
        ("sort model, page 1", q("", SortKey::Model, false, 0)),
    ];
    for (name, query) in &cases {
        let (t, page) = median(runs, || inv.query(query));
        println!(
            "{name:<40} {:>9.2?}  total {:>8}, rows {}",
            t,
            page.total,
            page.rows.len()
        );
    }
    let (t, _) = median(runs, || {
        inv.count("", now, 0);
    });
    println!("{:<40} {:>9.2?}", "count only, empty filter", t);
    // Changes (states prepared outside the timed part): an update of a known device with a
    // new IP (a new arena record), an insert of a new device, a remove.
    let updates: Vec<DeviceState> = (0..1001u64)
        .map(|k| {
            let mut d = device(k * 997 % n, &mut Rng(k));
            d.device.ip = Some(format!("172.17.{}.{}", k / 256 % 256, k % 256));
            d
        })
        .collect();
    let mut it = updates.iter();
    let (t, _) = median(updates.len(), || inv.upsert(it.next().expect("prepared")));
    println!("{:<40} {:>9.2?}", "upsert (known device, new IP)", t);
    let fresh: Vec<DeviceState> = (0..1001u64).map(|k| device(n + k, &mut r)).collect();
    let mut it = fresh.iter();
    let (t, _) = median(fresh.len(), || inv.upsert(it.next().expect("prepared")));
    println!("{:<40} {:>9.2?}", "upsert (new device)", t);
    let mut it = fresh.iter();
    let (t, gone) = median(fresh.len(), || inv.remove(&it.next().expect("prepared").sn));
    assert!(gone);
    println!("{:<40} {:>9.2?}", "remove", t);
    println!("{} devices at the end", inv.len());
}
