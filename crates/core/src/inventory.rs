//! The device inventory index: device summaries in memory, so the device list (web UI, REST
//! API, CLI) can filter, count, sort and page a million devices interactively (issues 4, 6).
//!
//! An [`Inventory`] keeps, per device, only what the list shows, filters or sorts by
//! ([`DeviceSummary`]). A query ([`Inventory::query`]) answers the filter of
//! [`crate::filter`] **exactly** (whole words, case-insensitive, all terms, `present` /
//! `missing`); the word-boundary test itself is `filter`'s. The layout is chosen for speed and
//! memory:
//!
//! * low-cardinality fields (vendor, model, type, phases, classes, environments, firmware and
//!   boot builds, ...) are interned as `u32` ids: a term is matched once per distinct value,
//!   then the devices are checked by id;
//! * the high-cardinality fields the filter looks at (serial, IP, real IP, proxy, name/hwid)
//!   are kept lower-cased in one contiguous arena, one record per device (each field followed by
//!   `'\n'`, a non-word byte like the start and end of a field); a term's occurrences are found
//!   with `memchr::memmem` over the whole arena, checked for word boundaries and mapped to their
//!   device through the ordered record table. Records of changed or removed devices become
//!   garbage; the arena is compacted when garbage exceeds half of it;
//! * terms combine as bitsets (`Vec<u64>`) over device slots;
//! * paging partially sorts the matching set (`select_nth_unstable_by`), on compact keys (a
//!   16-byte prefix of the serial, name and IP; a rank per distinct interned value), with the
//!   full strings deciding only ties. The order is the list's: the column, then the serial.
//!
//! The index is pure data (no I/O, no clock): the server keeps one up to date through the
//! store's change notifications, the CLI builds one from the stored devices.

use foldhash::{HashMap, HashMapExt};
use std::cmp::Ordering;

use crate::filter::{self, WordTerm};
use crate::state::DeviceState;

/// The fields of a device the list shows, filters or sorts by (a shallow [`DeviceState`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSummary {
    pub sn: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub device_type: Option<String>,
    pub hwid: Option<String>,
    pub ip: Option<String>,
    pub realip: Option<String>,
    pub proxy: Option<String>,
    /// `device.phase` (the phase the device reports).
    pub device_phase: Option<String>,
    /// The engine's phase.
    pub phase: Option<String>,
    pub classes: Option<String>,
    pub environments: Option<String>,
    pub firmware: Option<String>,
    pub firmware_requested: Option<String>,
    pub bootcode: Option<String>,
    pub certstat: Option<String>,
    pub seen: i64,
    pub first_seen: Option<i64>,
    pub backup: Option<i64>,
}

impl DeviceSummary {
    /// The summary of a stored device.
    pub fn from_state(d: &DeviceState) -> DeviceSummary {
        DeviceSummary {
            sn: d.sn.clone(),
            vendor: d.vendor.clone(),
            model: d.model.clone(),
            device_type: d.device.device_type.clone(),
            hwid: d.device.hwid.clone(),
            ip: d.device.ip.clone(),
            realip: d.device.realip.clone(),
            proxy: d.device.proxy.clone(),
            device_phase: d.device.phase.clone(),
            phase: d.phase.clone(),
            classes: d.device.classes.clone(),
            environments: d.device.environments.clone(),
            firmware: d.firmware.build.clone(),
            firmware_requested: d.firmware.requested.clone(),
            bootcode: d.bootcode.build.clone(),
            certstat: d.device.certstat.clone(),
            seen: d.seen,
            first_seen: d.first_seen,
            backup: d.device.backup,
        }
    }

    /// A shallow device state with the summary's fields (everything else default), e.g. to
    /// build a list row with the same code as for a stored state.
    pub fn to_state(&self) -> DeviceState {
        let mut d = DeviceState {
            sn: self.sn.clone(),
            seen: self.seen,
            phase: self.phase.clone(),
            vendor: self.vendor.clone(),
            model: self.model.clone(),
            first_seen: self.first_seen,
            ..Default::default()
        };
        d.device.device_type = self.device_type.clone();
        d.device.hwid = self.hwid.clone();
        d.device.ip = self.ip.clone();
        d.device.realip = self.realip.clone();
        d.device.proxy = self.proxy.clone();
        d.device.phase = self.device_phase.clone();
        d.device.classes = self.classes.clone();
        d.device.environments = self.environments.clone();
        d.device.backup = self.backup;
        d.device.certstat = self.certstat.clone();
        d.firmware.build = self.firmware.clone();
        d.firmware.requested = self.firmware_requested.clone();
        d.bootcode.build = self.bootcode.clone();
        d
    }

    /// The summary's fields, borrowed, as the index takes them.
    fn listed(&self) -> Listed<'_> {
        Listed {
            sn: &self.sn,
            high: [&self.ip, &self.realip, &self.proxy, &self.hwid].map(Option::as_deref),
            low: [
                &self.device_type,
                &self.device_phase,
                &self.phase,
                &self.classes,
                &self.environments,
                &self.firmware,
                &self.bootcode,
                &self.vendor,
                &self.model,
                &self.firmware_requested,
                &self.certstat,
            ]
            .map(Option::as_deref),
            seen: self.seen,
            first_seen: self.first_seen,
            backup: self.backup,
        }
    }
}

/// A device's listed fields, borrowed from a state or a summary: what
/// [`Inventory::upsert`] reads, without copying each text first.
#[derive(Debug, PartialEq)]
struct Listed<'a> {
    sn: &'a str,
    /// The high-cardinality fields, in arena order: ip, realip, proxy, hwid.
    high: [Option<&'a str>; HIGH - 1],
    /// The interned fields, filterable ones first (see [`Low`]).
    low: [Option<&'a str>; LOW_ALL],
    seen: i64,
    first_seen: Option<i64>,
    backup: Option<i64>,
}

impl<'a> Listed<'a> {
    /// The fields of a stored state, as [`DeviceSummary::from_state`] takes them.
    fn of(d: &'a DeviceState) -> Listed<'a> {
        Listed {
            sn: &d.sn,
            high: [
                &d.device.ip,
                &d.device.realip,
                &d.device.proxy,
                &d.device.hwid,
            ]
            .map(Option::as_deref),
            low: [
                &d.device.device_type,
                &d.device.phase,
                &d.phase,
                &d.device.classes,
                &d.device.environments,
                &d.firmware.build,
                &d.bootcode.build,
                &d.vendor,
                &d.model,
                &d.firmware.requested,
                &d.device.certstat,
            ]
            .map(Option::as_deref),
            seen: d.seen,
            first_seen: d.first_seen,
            backup: d.device.backup,
        }
    }
}

/// Indexes into a slot's interned ids; the first [`LOW_FILTER`] are the filter's fields.
#[derive(Clone, Copy)]
enum Low {
    Type = 0,
    DevicePhase = 1,
    Phase = 2,
    Firmware = 5,
    Vendor = 7,
    Model = 8,
}
const LOW_FILTER: usize = 9;
const LOW_ALL: usize = 11;
/// High-cardinality fields: sn, ip, realip, proxy, hwid.
const HIGH: usize = 5;
/// "No value" as an interned id.
const NONE: u32 = u32::MAX;
/// A record or slot nobody owns any more.
const DEAD: u32 = u32::MAX;

/// Columns the list sorts by (after the column, always by serial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Sn,
    Vendor,
    Model,
    Name,
    Ip,
    Phase,
    Firmware,
    Seen,
    LastBackup,
}

impl SortKey {
    /// Every key with its column name, in the list's order.
    pub const ALL: [(&'static str, SortKey); 9] = [
        ("sn", SortKey::Sn),
        ("vendor", SortKey::Vendor),
        ("model", SortKey::Model),
        ("name", SortKey::Name),
        ("ip", SortKey::Ip),
        ("phase", SortKey::Phase),
        ("firmware", SortKey::Firmware),
        ("seen", SortKey::Seen),
        ("last_backup", SortKey::LastBackup),
    ];

    /// The key of a column name (`sn`, `vendor`, ..., `last_backup`).
    pub fn parse(column: &str) -> Option<SortKey> {
        SortKey::ALL
            .iter()
            .find(|(n, _)| *n == column)
            .map(|(_, k)| *k)
    }
}

/// What to list.
#[derive(Debug, Clone)]
pub struct InventoryQuery<'a> {
    /// Filter terms ([`crate::filter`] semantics).
    pub filter: &'a str,
    pub sort: SortKey,
    pub descending: bool,
    pub offset: usize,
    /// 0 = all rows from `offset`.
    pub limit: usize,
    /// For the `present` / `missing` keywords.
    pub now: i64,
    /// `status.missing` (seconds; 0 = never missing).
    pub missing_after: u64,
}

/// One page of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryPage {
    /// How many devices pass the filter.
    pub total: usize,
    /// The rows of the page, in order.
    pub rows: Vec<DeviceSummary>,
}

/// Interned strings with reference counts (ids of unused strings are reused).
#[derive(Default)]
struct Interner {
    orig: Vec<Box<str>>,
    lower: Vec<Box<str>>,
    refs: Vec<u32>,
    ids: HashMap<Box<str>, u32>,
    free: Vec<u32>,
}

impl Interner {
    fn intern(&mut self, v: Option<&str>) -> u32 {
        let Some(v) = v else { return NONE };
        if let Some(&id) = self.ids.get(v) {
            self.refs[id as usize] += 1;
            return id;
        }
        let lower: Box<str> = v.to_lowercase().into();
        let id = match self.free.pop() {
            Some(id) => {
                self.orig[id as usize] = v.into();
                self.lower[id as usize] = lower;
                self.refs[id as usize] = 1;
                id
            }
            None => {
                self.orig.push(v.into());
                self.lower.push(lower);
                self.refs.push(1);
                (self.orig.len() - 1) as u32
            }
        };
        self.ids.insert(v.into(), id);
        id
    }

    fn release(&mut self, id: u32) {
        if id == NONE {
            return;
        }
        let r = &mut self.refs[id as usize];
        *r -= 1;
        if *r == 0 {
            let v = std::mem::take(&mut self.orig[id as usize]);
            self.ids.remove(&v);
            self.lower[id as usize] = Box::from("");
            self.free.push(id);
        }
    }

    fn get(&self, id: u32) -> Option<String> {
        (id != NONE).then(|| self.orig[id as usize].to_string())
    }
}

/// A bitset over device slots.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }
    fn set(&mut self, i: usize) {
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }
    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    fn and(&mut self, o: &Bits) {
        for (i, w) in self.0.iter_mut().enumerate() {
            *w &= o.0.get(i).copied().unwrap_or(0);
        }
    }
    /// The set bits, in order.
    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + b)
            })
        })
    }
}

/// The in-memory index of device summaries. See the module documentation.
pub struct Inventory {
    by_sn: HashMap<Box<str>, u32>,
    // Per slot (a device's slot is fixed until it is removed; free slots are reused).
    /// sn, ip, realip, proxy, hwid as given, concatenated.
    text: Vec<Box<str>>,
    /// End of sn, ip, realip, proxy in `text` (hwid runs to the end).
    cuts: Vec<[u32; HIGH - 1]>,
    /// Bit i: high field i (ip, realip, proxy, hwid) is present.
    present: Vec<u8>,
    low: Vec<[u32; LOW_ALL]>,
    seen: Vec<i64>,
    first_seen: Vec<Option<i64>>,
    backup: Vec<Option<i64>>,
    /// Sort prefixes of sn, hwid, ip.
    keys: Vec<[u128; 3]>,
    /// The slot's record in the arena (index into `rec_start`).
    rec: Vec<u32>,
    /// [`Inventory::version`] when the slot last changed.
    stamp: Vec<u64>,
    live: Bits,
    free: Vec<u32>,
    /// Lower-cased searchable high-cardinality fields, one record per device.
    arena: String,
    rec_start: Vec<usize>,
    rec_slot: Vec<u32>,
    garbage: usize,
    values: Interner,
    version: u64,
    /// While [`Inventory::track_removals`] is on: the serials removed since, with the
    /// version of their removal (for [`Inventory::upsert_unless_changed_since`]).
    removed: Option<HashMap<Box<str>, u64>>,
    /// Pages ending at or before this row are kept in one pass rather than selected from
    /// all matching rows.
    shallow_rows: usize,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::new()
    }
}

/// The first 16 bytes of `s`, big-endian, zero-padded: ordered like `s` whenever they differ.
fn prefix_key(s: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = s.len().min(16);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// An `i64` as an order-preserving unsigned number.
fn ordered(v: i64) -> u128 {
    ((v as u64) ^ (1 << 63)) as u128
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory {
            by_sn: HashMap::new(),
            text: Vec::new(),
            cuts: Vec::new(),
            present: Vec::new(),
            low: Vec::new(),
            seen: Vec::new(),
            first_seen: Vec::new(),
            backup: Vec::new(),
            keys: Vec::new(),
            rec: Vec::new(),
            stamp: Vec::new(),
            live: Bits::new(0),
            free: Vec::new(),
            arena: String::new(),
            rec_start: Vec::new(),
            rec_slot: Vec::new(),
            garbage: 0,
            values: Interner::default(),
            version: 0,
            removed: None,
            shallow_rows: 50_000,
        }
    }

    /// An index of `devices`.
    pub fn from_states<'a>(devices: impl IntoIterator<Item = &'a DeviceState>) -> Inventory {
        let mut inv = Inventory::new();
        for d in devices {
            inv.upsert(d);
        }
        inv
    }

    /// How many devices the index knows.
    pub fn len(&self) -> usize {
        self.by_sn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sn.is_empty()
    }

    /// Whether `sn` is known.
    pub fn contains(&self, sn: &str) -> bool {
        self.by_sn.contains_key(sn)
    }

    /// A counter that grows with every change (see [`Inventory::retain_known`]).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Add or replace the device `d.sn`.
    pub fn upsert(&mut self, d: &DeviceState) {
        self.upsert_listed(Listed::of(d));
    }

    /// Add or replace the device `s.sn`.
    pub fn upsert_summary(&mut self, s: DeviceSummary) {
        self.upsert_listed(s.listed());
    }

    fn upsert_listed(&mut self, s: Listed<'_>) {
        self.version += 1;
        let mut text = String::with_capacity(64);
        let mut cuts = [0u32; HIGH - 1];
        let mut present = 0u8;
        text.push_str(s.sn);
        for (i, f) in s.high.into_iter().enumerate() {
            cuts[i] = text.len() as u32;
            if let Some(v) = f {
                present |= 1 << i;
                text.push_str(v);
            }
        }
        let mut low = [NONE; LOW_ALL];
        for (i, f) in s.low.into_iter().enumerate() {
            low[i] = self.values.intern(f);
        }
        let keys = [
            prefix_key(s.sn),
            prefix_key(s.high[3].unwrap_or("")),
            prefix_key(s.high[0].unwrap_or("")),
        ];
        let slot = match self.by_sn.get(s.sn) {
            Some(&slot) => {
                let i = slot as usize;
                for id in self.low[i] {
                    self.values.release(id);
                }
                if *self.text[i] != *text || self.cuts[i] != cuts {
                    self.kill_record(i);
                    self.text[i] = text.into();
                    self.cuts[i] = cuts;
                    self.add_record(i);
                }
                slot
            }
            None => {
                let slot = match self.free.pop() {
                    Some(f) => f,
                    None => {
                        self.text.push(Box::from(""));
                        self.cuts.push([0; HIGH - 1]);
                        self.present.push(0);
                        self.low.push([NONE; LOW_ALL]);
                        self.seen.push(0);
                        self.first_seen.push(None);
                        self.backup.push(None);
                        self.keys.push([0; 3]);
                        self.rec.push(DEAD);
                        self.stamp.push(0);
                        (self.text.len() - 1) as u32
                    }
                };
                let i = slot as usize;
                self.text[i] = text.into();
                self.cuts[i] = cuts;
                self.add_record(i);
                self.by_sn.insert(s.sn.into(), slot);
                self.live.set(i);
                slot
            }
        };
        let i = slot as usize;
        self.present[i] = present;
        self.low[i] = low;
        self.seen[i] = s.seen;
        self.first_seen[i] = s.first_seen;
        self.backup[i] = s.backup;
        self.keys[i] = keys;
        self.stamp[i] = self.version;
        self.maybe_compact();
    }

    /// Forget `sn`; `false` if it was unknown.
    pub fn remove(&mut self, sn: &str) -> bool {
        let Some(slot) = self.by_sn.remove(sn) else {
            return false;
        };
        self.version += 1;
        let i = slot as usize;
        self.kill_record(i);
        for id in std::mem::replace(&mut self.low[i], [NONE; LOW_ALL]) {
            self.values.release(id);
        }
        self.text[i] = Box::from("");
        self.live.clear(i);
        self.free.push(slot);
        if let Some(removed) = &mut self.removed {
            removed.insert(sn.into(), self.version);
        }
        self.maybe_compact();
        true
    }

    /// Remember removals from now on (until [`Inventory::end_tracking_removals`]; those
    /// remembered before are forgotten), so that [`Inventory::upsert_unless_changed_since`]
    /// knows a device removed after a given version; returns the current version. For one
    /// reader of the store at a time that may hand back rows read before a change this index
    /// has already seen.
    pub fn track_removals(&mut self) -> u64 {
        self.removed = Some(HashMap::new());
        self.version
    }

    /// Stop remembering removals (and forget those remembered).
    pub fn end_tracking_removals(&mut self) {
        self.removed = None;
    }

    /// Whether `sn` changed (was added, replaced, touched or removed) after `version`.
    /// Removals count only while they are tracked ([`Inventory::track_removals`]).
    pub fn changed_since(&self, sn: &str, version: u64) -> bool {
        match self.by_sn.get(sn) {
            Some(&slot) => self.stamp[slot as usize] > version,
            None => self
                .removed
                .as_ref()
                .and_then(|r| r.get(sn))
                .is_some_and(|&v| v > version),
        }
    }

    /// [`Inventory::upsert_summary`] unless the device changed after `version` (a version
    /// taken, with removals tracked, before `s` was read from the store): a row read before
    /// a newer change must not overtake it. Returns whether `s` was applied.
    pub fn upsert_unless_changed_since(&mut self, s: DeviceSummary, version: u64) -> bool {
        if self.changed_since(&s.sn, version) {
            return false;
        }
        self.upsert_summary(s);
        true
    }

    /// Set the last-contact time of `sn`; `false` if it is unknown.
    pub fn touch(&mut self, sn: &str, seen: i64) -> bool {
        let Some(&slot) = self.by_sn.get(sn) else {
            return false;
        };
        self.version += 1;
        self.seen[slot as usize] = seen;
        self.stamp[slot as usize] = self.version;
        true
    }

    /// Forget every device last seen before `older_than` (as the store's expiry); returns how
    /// many went.
    pub fn expire(&mut self, older_than: i64) -> usize {
        let gone: Vec<Box<str>> = self
            .live
            .ones()
            .filter(|&i| self.seen[i] < older_than)
            .map(|i| self.sn_of(i).into())
            .collect();
        for sn in &gone {
            self.remove(sn);
        }
        gone.len()
    }

    /// Forget the devices not in `known` (sorted serials, e.g. the store's) unless they
    /// changed after `since_version` (a [`Inventory::version`] taken before `known` was read):
    /// reconciles deletions made elsewhere. Returns how many went.
    pub fn retain_known(&mut self, known: &[String], since_version: u64) -> usize {
        let gone: Vec<Box<str>> = self
            .live
            .ones()
            .filter(|&i| self.stamp[i] <= since_version)
            .map(|i| self.sn_of(i))
            .filter(|sn| known.binary_search_by(|k| k.as_str().cmp(sn)).is_err())
            .map(Box::from)
            .collect();
        for sn in &gone {
            self.remove(sn);
        }
        gone.len()
    }

    /// The summary of `sn`.
    pub fn get(&self, sn: &str) -> Option<DeviceSummary> {
        self.by_sn.get(sn).map(|&s| self.summary(s as usize))
    }

    /// Filter ([`crate::filter`] semantics), count, sort and page.
    pub fn query(&self, q: &InventoryQuery<'_>) -> InventoryPage {
        let hits = self.select(q.filter, q.now, q.missing_after);
        let total = hits.count();
        let offset = q.offset.min(total);
        let limit = if q.limit == 0 {
            total - offset
        } else {
            q.limit.min(total - offset)
        };
        if limit == 0 {
            return InventoryPage {
                total,
                rows: Vec::new(),
            };
        }
        // A page past the middle is a shallow page of the opposite order.
        let from_end = total - offset - limit;
        let slots = if from_end < offset {
            let mut s = self.page(&hits, q.sort, !q.descending, from_end, limit);
            s.reverse();
            s
        } else {
            self.page(&hits, q.sort, q.descending, offset, limit)
        };
        InventoryPage {
            total,
            rows: slots.into_iter().map(|s| self.summary(s)).collect(),
        }
    }

    /// How many devices pass `filter`.
    pub fn count(&self, filter: &str, now: i64, missing_after: u64) -> usize {
        self.select(filter, now, missing_after).count()
    }

    fn sn_of(&self, i: usize) -> &str {
        &self.text[i][..self.cuts[i][0] as usize]
    }

    /// High field `f` (1 = ip .. 4 = hwid) of slot `i`, `None` when absent.
    fn high_of(&self, i: usize, f: usize) -> Option<&str> {
        if self.present[i] >> (f - 1) & 1 == 0 {
            return None;
        }
        let t = &self.text[i];
        let start = self.cuts[i][f - 1] as usize;
        let end = if f < HIGH - 1 {
            self.cuts[i][f] as usize
        } else {
            t.len()
        };
        Some(&t[start..end])
    }

    fn summary(&self, i: usize) -> DeviceSummary {
        let v = |f: usize| self.values.get(self.low[i][f]);
        let h = |f: usize| self.high_of(i, f).map(str::to_string);
        DeviceSummary {
            sn: self.sn_of(i).to_string(),
            ip: h(1),
            realip: h(2),
            proxy: h(3),
            hwid: h(4),
            device_type: v(0),
            device_phase: v(1),
            phase: v(2),
            classes: v(3),
            environments: v(4),
            firmware: v(5),
            bootcode: v(6),
            vendor: v(7),
            model: v(8),
            firmware_requested: v(9),
            certstat: v(10),
            seen: self.seen[i],
            first_seen: self.first_seen[i],
            backup: self.backup[i],
        }
    }

    // --- the arena -----------------------------------------------------------------------

    fn add_record(&mut self, i: usize) {
        self.rec[i] = self.rec_start.len() as u32;
        self.rec_start.push(self.arena.len());
        self.rec_slot.push(i as u32);
        let t = &self.text[i];
        let c = self.cuts[i];
        let mut start = 0;
        for end in c.iter().map(|&e| e as usize).chain([t.len()]) {
            let v = &t[start..end];
            if v.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
                self.arena.push_str(&v.to_lowercase());
            } else {
                self.arena.push_str(v);
            }
            self.arena.push('\n');
            start = end;
        }
    }

    fn rec_range(&self, k: usize) -> (usize, usize) {
        let end = self
            .rec_start
            .get(k + 1)
            .copied()
            .unwrap_or(self.arena.len());
        (self.rec_start[k], end)
    }

    fn kill_record(&mut self, i: usize) {
        let k = self.rec[i];
        if k == DEAD {
            return;
        }
        let (s, e) = self.rec_range(k as usize);
        self.garbage += e - s;
        self.rec_slot[k as usize] = DEAD;
        self.rec[i] = DEAD;
    }

    fn maybe_compact(&mut self) {
        if self.garbage <= 4096 || self.garbage * 2 <= self.arena.len() {
            return;
        }
        let mut arena = String::with_capacity(self.arena.len() - self.garbage);
        let mut starts = Vec::with_capacity(self.len());
        let mut slots = Vec::with_capacity(self.len());
        for k in 0..self.rec_start.len() {
            let slot = self.rec_slot[k];
            if slot == DEAD {
                continue;
            }
            let (s, e) = self.rec_range(k);
            self.rec[slot as usize] = starts.len() as u32;
            starts.push(arena.len());
            slots.push(slot);
            arena.push_str(&self.arena[s..e]);
        }
        self.arena = arena;
        self.rec_start = starts;
        self.rec_slot = slots;
        self.garbage = 0;
    }

    // --- filtering ----------------------------------------------------------------------

    /// The slots of the devices passing `filter`.
    fn select(&self, filter: &str, now: i64, missing_after: u64) -> Bits {
        let mut cand = self.live.clone();
        let terms: Vec<String> = filter.split_whitespace().map(str::to_lowercase).collect();
        for term in &terms {
            if cand.0.iter().all(|&w| w == 0) {
                break;
            }
            let hit = self.term_hits(term, &cand, now, missing_after);
            cand.and(&hit);
        }
        cand
    }

    /// The slots of `cand` that `term` (lower-cased, non-empty) matches.
    fn term_hits(&self, term: &str, cand: &Bits, now: i64, missing_after: u64) -> Bits {
        let mut hit = Bits::new(self.text.len());
        let Some(word) = WordTerm::new(term) else {
            return cand.clone();
        };
        // The keywords.
        if term == "missing" || term == "present" {
            let want = term == "missing";
            let cutoff = now.saturating_sub(missing_after.min(i64::MAX as u64) as i64);
            for i in cand.ones() {
                let missing = missing_after > 0 && self.seen[i] < cutoff;
                if missing == want {
                    hit.set(i);
                }
            }
        }
        // Interned fields: each distinct value once.
        let vhit: Vec<bool> = (0..self.values.orig.len())
            .map(|id| {
                self.values.refs[id] > 0 && filter::word_match_lower(&self.values.lower[id], term)
            })
            .collect();
        if vhit.iter().any(|&b| b) {
            for i in cand.ones() {
                if self.low[i][..LOW_FILTER]
                    .iter()
                    .any(|&id| id != NONE && vhit[id as usize])
                {
                    hit.set(i);
                }
            }
        }
        // The arena: per candidate when few are left, else one search over everything.
        let finder = memchr::memmem::Finder::new(term.as_bytes());
        if cand.count().saturating_mul(8) < self.len() {
            for i in cand.ones() {
                if hit.get(i) {
                    continue;
                }
                let (s, e) = self.rec_range(self.rec[i] as usize);
                let mut pos = s;
                while let Some(off) = finder.find(&self.arena.as_bytes()[pos..e]) {
                    if word.bounded_at(&self.arena, pos + off) {
                        hit.set(i);
                        break;
                    }
                    pos += off + term.len();
                }
            }
            return hit;
        }
        let hay = self.arena.as_bytes();
        let starts = &self.rec_start;
        let (mut pos, mut k) = (0usize, 0usize);
        // Occurrences in order and without overlap, as `str::match_indices` finds them in each
        // field; once a record's device is decided the rest of the record is skipped.
        while let Some(off) = finder.find(&hay[pos..]) {
            let p = pos + off;
            // The record holding p: usually the current one or one shortly after.
            let mut probe = 0;
            while probe < 8 && starts.get(k + 1).is_some_and(|&s| s <= p) {
                k += 1;
                probe += 1;
            }
            if starts.get(k + 1).is_some_and(|&s| s <= p) {
                k += starts[k + 1..].partition_point(|&s| s <= p);
            }
            let end = starts.get(k + 1).copied().unwrap_or(hay.len());
            let slot = self.rec_slot[k];
            if slot == DEAD || !cand.get(slot as usize) || hit.get(slot as usize) {
                pos = end;
                continue;
            }
            if word.bounded_at(&self.arena, p) {
                hit.set(slot as usize);
                pos = end;
            } else {
                pos = p + term.len();
            }
        }
        hit
    }

    // --- sorting and paging -------------------------------------------------------------

    /// Rank of every interned value by its string, for the interned sort columns; equal
    /// strings rank equal. `virt` are strings standing for "no value"; their ranks follow.
    fn ranks(&self, virt: &[&str]) -> (Vec<u32>, Vec<u32>) {
        let n = self.values.orig.len();
        let mut order: Vec<(&str, usize)> = (0..n)
            .filter(|&id| self.values.refs[id] > 0)
            .map(|id| (&*self.values.orig[id], id))
            .chain(virt.iter().enumerate().map(|(j, s)| (*s, n + j)))
            .collect();
        order.sort_unstable();
        let mut rank = vec![0u32; n + virt.len()];
        let mut r = 0u32;
        for (j, (s, id)) in order.iter().enumerate() {
            if j > 0 && order[j - 1].0 != *s {
                r += 1;
            }
            rank[*id] = r;
        }
        let v = rank.split_off(n);
        (rank, v)
    }

    /// The slots of rows `offset..offset + limit` (both within the matches) in list order.
    fn page(
        &self,
        hits: &Bits,
        key: SortKey,
        desc: bool,
        offset: usize,
        limit: usize,
    ) -> Vec<usize> {
        let (ranks, virt) = match key {
            SortKey::Vendor => self.ranks(&["innovaphone"]),
            SortKey::Model | SortKey::Phase | SortKey::Firmware => self.ranks(&[""]),
            _ => (Vec::new(), Vec::new()),
        };
        let rank_of = |id: u32| -> u128 {
            if id == NONE {
                virt[0] as u128
            } else {
                ranks[id as usize] as u128
            }
        };
        let first = |a: u32, b: u32| if a != NONE { a } else { b };
        // The exact order of the list: the column's value, then the serial.
        let value = |i: usize| -> (u128, &str) {
            let l = &self.low[i];
            match key {
                SortKey::Sn => (0, ""),
                SortKey::Vendor => (rank_of(l[Low::Vendor as usize]), ""),
                SortKey::Model => (
                    rank_of(first(l[Low::Model as usize], l[Low::Type as usize])),
                    "",
                ),
                SortKey::Phase => (
                    rank_of(first(l[Low::DevicePhase as usize], l[Low::Phase as usize])),
                    "",
                ),
                SortKey::Firmware => (rank_of(l[Low::Firmware as usize]), ""),
                SortKey::Name => (0, self.high_of(i, 4).unwrap_or("")),
                SortKey::Ip => (0, self.high_of(i, 1).unwrap_or("")),
                SortKey::Seen => (ordered(self.seen[i]), ""),
                SortKey::LastBackup => match self.backup[i] {
                    None => (0, ""),
                    Some(b) => (1 << 64 | ordered(b), ""),
                },
            }
        };
        let exact = |a: usize, b: usize| -> Ordering {
            value(a)
                .cmp(&value(b))
                .then(self.keys[a][0].cmp(&self.keys[b][0]))
                .then_with(|| self.sn_of(a).cmp(self.sn_of(b)))
        };
        // A compact key per row that is ordered like `exact` (ties are left to `exact`): the
        // column's value (or its 16-byte prefix) with as much of the serial's prefix as fits.
        let sn_hi = |i: usize, bits: u32| self.keys[i][0] >> (128 - bits);
        let compact = |i: usize| -> u128 {
            let l = &self.low[i];
            match key {
                SortKey::Sn => self.keys[i][0],
                SortKey::Vendor | SortKey::Model | SortKey::Phase | SortKey::Firmware => {
                    let r = match key {
                        SortKey::Vendor => rank_of(l[Low::Vendor as usize]),
                        SortKey::Model => {
                            rank_of(first(l[Low::Model as usize], l[Low::Type as usize]))
                        }
                        SortKey::Phase => {
                            rank_of(first(l[Low::DevicePhase as usize], l[Low::Phase as usize]))
                        }
                        _ => rank_of(l[Low::Firmware as usize]),
                    };
                    r << 96 | sn_hi(i, 96)
                }
                SortKey::Name => self.keys[i][1],
                SortKey::Ip => self.keys[i][2],
                SortKey::Seen => ordered(self.seen[i]) << 64 | sn_hi(i, 64),
                SortKey::LastBackup => {
                    let b = self.backup[i].map_or(0, |b| ordered(b).max(1));
                    b << 64 | sn_hi(i, 64)
                }
            }
        };
        let cmp = |a: &(u128, u32), b: &(u128, u32)| -> Ordering {
            let o =
                a.0.cmp(&b.0)
                    .then_with(|| exact(a.1 as usize, b.1 as usize));
            if desc {
                o.reverse()
            } else {
                o
            }
        };
        let item = |i: usize| (compact(i), i as u32);
        let want = offset + limit;
        let mut rows: Vec<(u128, u32)> = if want <= self.shallow_rows {
            // A shallow page: keep the best `want` rows in one pass; most rows lose against
            // the current threshold at once.
            let mut buf: Vec<(u128, u32)> = Vec::with_capacity(2 * want);
            let mut threshold: Option<(u128, u32)> = None;
            for i in hits.ones() {
                let it = item(i);
                if threshold.is_some_and(|t| cmp(&it, &t) != Ordering::Less) {
                    continue;
                }
                buf.push(it);
                if buf.len() == 2 * want {
                    buf.select_nth_unstable_by(want - 1, &cmp);
                    buf.truncate(want);
                    threshold = Some(buf[want - 1]);
                }
            }
            if buf.len() > want {
                buf.select_nth_unstable_by(want - 1, &cmp);
                buf.truncate(want);
            }
            buf.sort_unstable_by(&cmp);
            buf.drain(..offset);
            buf
        } else {
            let mut items: Vec<(u128, u32)> = hits.ones().map(item).collect();
            if offset > 0 {
                items.select_nth_unstable_by(offset, &cmp);
            }
            let tail = &mut items[offset..];
            if limit < tail.len() {
                tail.select_nth_unstable_by(limit, &cmp);
            }
            let page = &mut tail[..limit];
            page.sort_unstable_by(&cmp);
            page.to_vec()
        };
        rows.truncate(limit);
        rows.iter().map(|t| t.1 as usize).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
            v[self.below(v.len())]
        }
        fn opt(&mut self, v: &[&str]) -> Option<String> {
            if self.below(5) == 0 {
                None
            } else {
                Some(self.pick(v).to_string())
            }
        }
    }

    /// The index reads a state's fields exactly as they are in its summary (two spellings
    /// of one mapping: borrowed from the state, owned in the summary).
    #[test]
    fn a_state_lists_as_its_summary() {
        let mut r = Rng(0x5eed);
        for n in 0..200 {
            let mut d = random_device(&mut r, n);
            d.first_seen = (n % 3 == 0).then_some(5);
            d.device.backup = (n % 4 == 0).then_some(6);
            let summary = DeviceSummary::from_state(&d);
            assert_eq!(Listed::of(&d), summary.listed());
        }
        // every listed field is read from a distinct place of the state
        {
            let mut marked = DeviceState::default();
            for (i, slot) in [
                &mut marked.device.ip,
                &mut marked.device.realip,
                &mut marked.device.proxy,
                &mut marked.device.hwid,
                &mut marked.device.device_type,
                &mut marked.device.phase,
                &mut marked.phase,
                &mut marked.device.classes,
                &mut marked.device.environments,
                &mut marked.firmware.build,
                &mut marked.bootcode.build,
                &mut marked.vendor,
                &mut marked.model,
                &mut marked.firmware.requested,
                &mut marked.device.certstat,
            ]
            .into_iter()
            .enumerate()
            {
                *slot = Some(format!("f{i}"));
            }
            let l = Listed::of(&marked);
            let got: Vec<&str> = l.high.iter().chain(&l.low).map(|f| f.unwrap()).collect();
            let want: Vec<String> = (0..15).map(|i| format!("f{i}")).collect();
            assert_eq!(got, want);
        }
    }

    fn random_device(r: &mut Rng, n: usize) -> DeviceState {
        let mut d = DeviceState {
            sn: format!(
                "{}-{:02x}-{:02X}",
                r.pick(&["00-90-33", "00-15-65", "AC-1F"]),
                n % 7,
                r.below(40)
            ),
            seen: 1000 + r.below(1000) as i64,
            ..Default::default()
        };
        let ips = [
            "172.16.3.9",
            "10.172.160.1",
            "172.16.0.5",
            "160.1.1.1",
            "172.160.4.4",
            "192.168.16.1",
            "",
            "fe80::16",
        ];
        d.device.ip = r.opt(&ips);
        d.device.realip = r.opt(&ips);
        d.device.proxy = r.opt(&["sip.example.com", "SIP.Example.com:5060", "pbx-16", ""]);
        d.device.device_type = r.opt(&["IP222", "IP232", "ip2220", "IP1600", "Yealink T46U"]);
        d.device.hwid = r.opt(&["IP222-30-00-af", "IP1600-ab", "Ünïcode-Name", "x_16"]);
        d.device.phase = r.opt(&["done", "Firmware", "missing", "boot"]);
        d.phase = r.opt(&["done", "firmware", "update"]);
        d.device.classes = r.opt(&["Phone IP222", "Gateway,16", "ip222 ÄBC"]);
        d.device.environments = r.opt(&["prod", "Test lab", "present"]);
        d.firmware.build = r.opt(&["13r2 sr16", "13r3", "12r1 SR5", "16.0"]);
        d.firmware.requested = r.opt(&["13r3", "14r1"]);
        d.bootcode.build = r.opt(&["13r2", "BOOT16"]);
        d.vendor = r.opt(&["yealink", "Snom", "innovaphone", "aaa"]);
        d.model = r.opt(&["T46U", "D785", "", "IP222"]);
        d.device.backup = if r.below(2) == 0 {
            None
        } else {
            Some(r.below(50) as i64)
        };
        d.device.certstat = r.opt(&["ok", "pending"]);
        d
    }

    const TERMS: &[&str] = &[
        "172.16.",
        "ip222",
        "IP222",
        "16",
        "172",
        ".16",
        "16.",
        "missing",
        "present",
        "MISSING",
        "done",
        "firmware",
        "sr16",
        "00-90-33",
        "90",
        "af",
        "AF",
        "30-00-af",
        "ünïcode",
        "ÄBC",
        "sip.example.com",
        "example",
        ":5060",
        "5060",
        "yealink",
        "t46u",
        "innovaphone",
        "x_16",
        "x",
        "ip",
        "-",
        "1",
        "13r3",
        "prod",
        "test",
        "lab",
        "fe80",
        "::16",
        "zzz",
    ];

    fn brute(devs: &HashMap<String, DeviceState>, f: &str, now: i64, m: u64) -> Vec<String> {
        let mut v: Vec<String> = devs
            .values()
            .filter(|d| filter::device_matches(f, d, now, m))
            .map(|d| d.sn.clone())
            .collect();
        v.sort();
        v
    }

    fn all_sns(inv: &Inventory, f: &str, now: i64, m: u64) -> Vec<String> {
        let page = inv.query(&InventoryQuery {
            filter: f,
            sort: SortKey::Sn,
            descending: false,
            offset: 0,
            limit: 0,
            now,
            missing_after: m,
        });
        assert_eq!(page.total, page.rows.len());
        page.rows.into_iter().map(|r| r.sn).collect()
    }

    #[test]
    fn filter_agrees_with_filter_rs() {
        let mut r = Rng(0x9e3779b97f4a7c15);
        let mut devs: HashMap<String, DeviceState> = HashMap::new();
        let mut inv = Inventory::new();
        for round in 0..6 {
            // Add, update and remove devices, so garbage, compaction and slot reuse happen.
            for n in 0..400 {
                let d = random_device(&mut r, n + round);
                inv.upsert(&d);
                devs.insert(d.sn.clone(), d);
            }
            let sns: Vec<String> = devs.keys().cloned().collect();
            for sn in sns.iter().filter(|_| r.below(4) == 0) {
                assert!(inv.remove(sn));
                devs.remove(sn);
            }
            assert_eq!(inv.len(), devs.len());
            // Both the whole-arena search and the per-device check are exercised: the first
            // term leaves many candidates, later ones few.
            for _ in 0..150 {
                let n = 1 + r.below(3);
                let f: Vec<&str> = (0..n).map(|_| r.pick(TERMS)).collect();
                let f = f.join(if r.below(2) == 0 { " " } else { "  \t" });
                let (now, m) = (1500 + r.below(800) as i64, [0u64, 300, 600][r.below(3)]);
                assert_eq!(
                    all_sns(&inv, &f, now, m),
                    brute(&devs, &f, now, m),
                    "filter {f:?}, now {now}, missing {m}"
                );
            }
        }
        assert!(inv.garbage * 2 <= inv.arena.len().max(8192));
    }

    /// The list's order, as the service computed it before the index: the column, then sn.
    fn row_key(d: &DeviceState, key: SortKey) -> (String, i64, Option<i64>) {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        let e = (String::new(), 0, None);
        match key {
            SortKey::Sn => e,
            SortKey::Vendor => (d.vendor.clone().unwrap_or("innovaphone".into()), 0, None),
            SortKey::Model => (
                d.model
                    .clone()
                    .or(d.device.device_type.clone())
                    .unwrap_or_default(),
                0,
                None,
            ),
            SortKey::Name => (s(&d.device.hwid), 0, None),
            SortKey::Ip => (s(&d.device.ip), 0, None),
            SortKey::Phase => (
                d.device
                    .phase
                    .clone()
                    .or(d.phase.clone())
                    .unwrap_or_default(),
                0,
                None,
            ),
            SortKey::Firmware => (s(&d.firmware.build), 0, None),
            SortKey::Seen => (String::new(), d.seen, None),
            SortKey::LastBackup => (String::new(), 0, d.device.backup),
        }
    }

    #[test]
    fn sorting_and_paging_agree_with_a_full_sort() {
        let mut r = Rng(42);
        let mut devs: HashMap<String, DeviceState> = HashMap::new();
        let mut inv = Inventory::new();
        for n in 0..700 {
            let mut d = random_device(&mut r, n);
            if n % 5 == 0 {
                // long names and IPs that share 16-byte prefixes
                d.device.hwid = Some(format!("a-very-long-name-{}", r.below(30)));
                d.device.ip = Some(format!("2001:0db8:0000:0000:{:x}", r.below(30)));
            }
            inv.upsert(&d);
            devs.insert(d.sn.clone(), d);
        }
        for (shallow, (_, key)) in [50_000, 30, 0]
            .into_iter()
            .flat_map(|s| SortKey::ALL.map(|k| (s, k)))
        {
            inv.shallow_rows = shallow;
            for desc in [false, true] {
                for f in ["", "ip222", "172.16. present"] {
                    let mut want: Vec<&DeviceState> = devs
                        .values()
                        .filter(|d| filter::device_matches(f, d, 1500, 300))
                        .collect();
                    want.sort_by(|a, b| {
                        let o = row_key(a, key)
                            .cmp(&row_key(b, key))
                            .then_with(|| a.sn.cmp(&b.sn));
                        if desc {
                            o.reverse()
                        } else {
                            o
                        }
                    });
                    for (offset, limit) in
                        [(0, 0), (0, 10), (5, 7), (100, 50), (400, 30), (10_000, 5)]
                    {
                        let page = inv.query(&InventoryQuery {
                            filter: f,
                            sort: key,
                            descending: desc,
                            offset,
                            limit,
                            now: 1500,
                            missing_after: 300,
                        });
                        assert_eq!(page.total, want.len());
                        let end = if limit == 0 {
                            want.len()
                        } else {
                            (offset + limit).min(want.len())
                        };
                        let expect: Vec<&str> = want[offset.min(want.len())..end]
                            .iter()
                            .map(|d| d.sn.as_str())
                            .collect();
                        let got: Vec<&str> = page.rows.iter().map(|r| r.sn.as_str()).collect();
                        assert_eq!(
                            got, expect,
                            "{key:?} desc={desc} {f:?} {offset}+{limit} shallow {shallow}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn summaries_round_trip_and_changes_apply() {
        let mut r = Rng(7);
        let mut inv = Inventory::new();
        let d = random_device(&mut r, 1);
        inv.upsert(&d);
        let s = inv.get(&d.sn).unwrap();
        assert_eq!(s, DeviceSummary::from_state(&d));
        assert_eq!(DeviceSummary::from_state(&s.to_state()), s);
        // an update that changes the name replaces the record; the old one is garbage
        let mut d2 = d.clone();
        d2.device.hwid = Some("Renamed-Phone".into());
        inv.upsert(&d2);
        assert_eq!(inv.len(), 1);
        assert_eq!(inv.count("renamed-phone", 0, 0), 1);
        assert_eq!(inv.count("ip222-30-00-af", 0, 0), 0);
        assert!(inv.touch(&d.sn, 5));
        assert_eq!(inv.get(&d.sn).unwrap().seen, 5);
        assert!(!inv.touch("nobody", 5));
        let mut e = random_device(&mut r, 2);
        e.sn = "other".into();
        e.seen = 100;
        inv.upsert(&e);
        assert_eq!(inv.expire(50), 1);
        assert!(inv.contains("other") && !inv.contains(&d.sn));
        let v = inv.version();
        inv.upsert(&d);
        // `other` is not known to the store and unchanged since v: goes; d changed after v.
        assert_eq!(inv.retain_known(&[], v), 1);
        assert!(inv.contains(&d.sn));
        assert!(inv.remove(&d.sn));
        assert!(!inv.remove(&d.sn));
        assert!(inv.is_empty());
        assert_eq!(inv.count("", 0, 0), 0);
        assert!(inv.values.ids.is_empty(), "interned values are released");
    }

    /// A row read from the store before a change the index has seen does not overtake it:
    /// not a newer save, not a touch, not a removal (while removals are tracked).
    #[test]
    fn rows_read_before_a_change_do_not_overtake_it() {
        let mut inv = Inventory::new();
        let mut a = DeviceState::new("00-90-33-00-00-01", 100);
        a.device.ip = Some("10.0.0.1".into());
        let b = DeviceState::new("00-90-33-00-00-02", 100);
        let c = DeviceState::new("00-90-33-00-00-03", 100);
        let fresh = DeviceState::new("00-90-33-00-00-04", 100);
        for d in [&a, &b, &c] {
            inv.upsert(d);
        }
        let before = inv.track_removals();
        // Rows as a reader saw them at `before`.
        let (old_a, old_b, old_c) = (
            DeviceSummary::from_state(&a),
            DeviceSummary::from_state(&b),
            DeviceSummary::from_state(&c),
        );
        // Meanwhile: a saved anew, b touched, c removed.
        a.device.ip = Some("10.0.0.2".into());
        inv.upsert(&a);
        assert!(inv.touch(&b.sn, 200));
        assert!(inv.remove(&c.sn));
        assert!(!inv.upsert_unless_changed_since(old_a, before));
        assert!(!inv.upsert_unless_changed_since(old_b, before));
        assert!(!inv.upsert_unless_changed_since(old_c, before));
        assert_eq!(inv.get(&a.sn).unwrap().ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(inv.get(&b.sn).unwrap().seen, 200);
        assert!(!inv.contains(&c.sn));
        // Unchanged or unknown devices are applied.
        let mut newer_fresh = DeviceSummary::from_state(&fresh);
        newer_fresh.ip = Some("10.9.9.9".into());
        assert!(inv.upsert_unless_changed_since(newer_fresh, before));
        assert_eq!(inv.count("10.9.9.9", 0, 0), 1);
        // A row read after the changes applies again.
        let after = inv.version();
        let mut later_a = DeviceSummary::from_state(&a);
        later_a.ip = Some("10.0.0.3".into());
        assert!(inv.upsert_unless_changed_since(later_a, after));
        assert_eq!(inv.get(&a.sn).unwrap().ip.as_deref(), Some("10.0.0.3"));
        // Untracked, a removal is forgotten: the device is simply unknown.
        inv.end_tracking_removals();
        assert!(!inv.changed_since(&c.sn, before));
    }
}
