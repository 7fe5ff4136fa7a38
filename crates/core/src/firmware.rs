//! The firmware catalogue: which images exist, which one each device should run, under which
//! URL it is served, and how far each device has got.
//!
//! Images live in the site under `<firmware.dir>/<vendor>/<model>/<version>/<file>` (default
//! `SITE/firmware/`; innovaphone's `fw/<build>/` folder is separate and untouched). Their size
//! and sha256 are kept in a manifest, `<firmware.dir>/catalog.toml` ([`Manifest`]), written by
//! `autoprov firmware add`. The manifest lives in the site, not in the database, because it
//! describes site content: it travels with the files when a site is copied, backed up or put
//! under version control, an operator can read it, and the server loads it into the same
//! immutable snapshot as the rest of the site. The database only keeps what devices did
//! ([`FirmwareProgress`]).
//!
//! Target versions come from `[[firmware.targets]]` in `autoprov.toml`
//! ([`crate::config::FirmwareTargetRule`]). [`FirmwareCatalog::target`] picks, for a device's
//! vendor, model and groups, the first rule (in file order) that names one of the device's
//! groups, else the model-wide rule (no groups), else nothing.
//!
//! # The URL rule
//!
//! A phone installs whatever a *changed* firmware URL names, and some (Gigaset/Snom) only
//! download when the URL changes (seed 000: "do not change the name of the firmware file after
//! download"). So:
//!
//! 1. The URL of an image is `/firmware/<vendor>/<model>/<version>/<file>` of the **first
//!    manifest entry with the same sha256** (its *canonical* entry). Two versions, or two models,
//!    with identical bytes share one URL; the later entries are aliases and are not stored or
//!    served a second time.
//! 2. Manifest entries are immutable and only appended: adding a different file under an
//!    existing vendor/model/version is refused ([`AddConflict`]). Hence a URL always names the
//!    same bytes, and the canonical entry of given bytes never changes.
//! 3. [`FirmwareCatalog::target`] derives the URL from the target image's content only, so a
//!    device's firmware URL changes exactly when its target content changes, which needs a
//!    target version change, and never otherwise (not on restart, reordering of rules,
//!    re-adding a file, or a change in letter case of the request).
//!
//! Renderers may append a per-device query (e.g. `?mac=<mac>`, as Wazo does for Snom) so the
//! server can tell who downloads; that keeps each device's URL stable too.
//!
//! # Progress
//!
//! [`FirmwareProgress`] is one device's record: the version it last reported, the image it
//! last fetched and how often. A device that reports a target version is done; one that fetches
//! the same image `flag_after` times (default 3) without its reported version changing is
//! flagged, because it is probably re-installing in a loop.
//!
//! This module is pure: no file system, no clock, no HTTP. Reading files, hashing and serving
//! belong to `autoprov-server`, persistence to `autoprov-store`.

use serde::{Deserialize, Serialize};

use crate::config::FirmwareTargetRule;

/// Name of the manifest inside the catalogue directory.
pub const MANIFEST_FILE: &str = "catalog.toml";

/// URL path prefix under which catalogue images are served.
pub const URL_PREFIX: &str = "/firmware/";

/// One image as the manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub vendor: String,
    pub model: String,
    pub version: String,
    /// File name; for an alias entry the canonical entry's file name.
    pub file: String,
    pub size: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// When the entry was added (Unix seconds); served as `Last-Modified`.
    #[serde(default)]
    pub added: i64,
}

impl Image {
    /// `<vendor>/<model>/<version>/<file>`, relative to the catalogue directory.
    pub fn rel_path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.vendor, self.model, self.version, self.file
        )
    }

    /// `/firmware/<vendor>/<model>/<version>/<file>`.
    pub fn url_path(&self) -> String {
        format!("{URL_PREFIX}{}", self.rel_path())
    }

    /// The strong entity tag of the content: its sha256 in quotes.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }

    fn is(&self, vendor: &str, model: &str) -> bool {
        self.vendor.eq_ignore_ascii_case(vendor) && self.model.eq_ignore_ascii_case(model)
    }
}

/// The manifest `catalog.toml`: every image ever added, in the order added.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default, rename = "image")]
    pub images: Vec<Image>,
}

/// What [`Manifest::plan_add`] decided for a new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddPlan {
    /// New content: store the file at the entry's `rel_path` and append the entry.
    Store(Image),
    /// The bytes are already in the catalogue under another vendor/model/version: append the
    /// entry as an alias (no copy); it is served under the canonical entry's URL.
    Alias { entry: Image, canonical: Image },
    /// Exactly this vendor/model/version with these bytes is already there: nothing to do.
    AlreadyPresent(Image),
}

/// Adding would give an existing vendor/model/version other bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{vendor} {model} version {version} is already in the catalogue with other content \
     (sha256 {existing}, the new file has {new}); versions are immutable so that no phone \
     re-installs under a known URL: add the new build under a new version"
)]
pub struct AddConflict {
    pub vendor: String,
    pub model: String,
    pub version: String,
    pub existing: String,
    pub new: String,
}

impl Manifest {
    pub fn from_toml_str(text: &str) -> Result<Manifest, crate::config::ConfigError> {
        crate::config::from_toml(text)
    }

    pub fn to_toml_string(&self) -> String {
        let body = toml::to_string_pretty(self).expect("manifest always serialises");
        format!(
            "# autoprov firmware catalogue, written by `autoprov firmware add`.\n\
             # Entries are immutable and in the order added; the first entry with a given sha256\n\
             # names the URL of those bytes. Do not edit or remove entries phones may use.\n\n{body}"
        )
    }

    /// Decide how to add `new` (a file with its size, sha256 and the time it is added).
    /// Vendor and model take the spelling already in the catalogue when they match
    /// case-insensitively, so one vendor or model never gets two URL spellings.
    pub fn plan_add(&self, new: Image) -> Result<AddPlan, AddConflict> {
        let mut entry = new;
        entry.sha256.make_ascii_lowercase();
        if let Some(i) = self
            .images
            .iter()
            .find(|i| i.vendor.eq_ignore_ascii_case(&entry.vendor))
        {
            entry.vendor.clone_from(&i.vendor);
        }
        if let Some(i) = self
            .images
            .iter()
            .find(|i| i.is(&entry.vendor, &entry.model))
        {
            entry.model.clone_from(&i.model);
        }
        if let Some(old) = self
            .images
            .iter()
            .find(|i| i.is(&entry.vendor, &entry.model) && i.version == entry.version)
        {
            if old.sha256 == entry.sha256 {
                return Ok(AddPlan::AlreadyPresent(old.clone()));
            }
            return Err(AddConflict {
                vendor: old.vendor.clone(),
                model: old.model.clone(),
                version: old.version.clone(),
                existing: old.sha256.clone(),
                new: entry.sha256,
            });
        }
        match self.images.iter().find(|i| i.sha256 == entry.sha256) {
            Some(canonical) => {
                entry.file = canonical.file.clone();
                Ok(AddPlan::Alias {
                    entry,
                    canonical: canonical.clone(),
                })
            }
            None => Ok(AddPlan::Store(entry)),
        }
    }
}

/// Whether `s` may be a vendor, model, version or file name in the catalogue: 1 to 128 of
/// `A-Z a-z 0-9 . _ - + ~ ( ) , =`, not starting with a dot. These need no escaping in a URL
/// path and cannot leave their directory.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~(),=".contains(&b))
}

/// Whether `s` is a lower-case hex sha256.
pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a vendor renderer puts into a device's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirmwareTarget {
    /// Vendor and model as the catalogue spells them.
    pub vendor: String,
    pub model: String,
    /// The target version (what the device reports once updated).
    pub version: String,
    /// File name in the URL (the canonical entry's).
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    /// `/firmware/<vendor>/<model>/<version>/<file>` of the canonical entry; prefix it with the
    /// server's base URL.
    pub url_path: String,
    /// The group whose rule chose this target; `None` for the model-wide rule.
    pub group: Option<String>,
}

/// The catalogue as the server uses it: the manifest plus the target rules. Immutable.
#[derive(Debug, Clone, Default)]
pub struct FirmwareCatalog {
    images: Vec<Image>,
    /// For each image, the index of its canonical entry (first with the same sha256).
    canonical: Vec<usize>,
    rules: Vec<FirmwareTargetRule>,
}

impl FirmwareCatalog {
    pub fn new(manifest: Manifest, rules: &[FirmwareTargetRule]) -> FirmwareCatalog {
        let images = manifest.images;
        let canonical = images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                images[..i]
                    .iter()
                    .position(|o| o.sha256 == img.sha256)
                    .unwrap_or(i)
            })
            .collect();
        FirmwareCatalog {
            images,
            canonical,
            rules: rules.to_vec(),
        }
    }

    /// All manifest entries, in the order added.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// The target rules, in file order.
    pub fn rules(&self) -> &[FirmwareTargetRule] {
        &self.rules
    }

    /// The entry for `vendor model version` (vendor and model compared ignoring ASCII case).
    pub fn image(&self, vendor: &str, model: &str, version: &str) -> Option<&Image> {
        self.images
            .iter()
            .find(|i| i.is(vendor, model) && i.version == version)
    }

    /// The entry whose URL serves `image`'s bytes: the first entry with the same sha256
    /// (`image` itself unless it is an alias).
    pub fn canonical<'a>(&'a self, image: &'a Image) -> &'a Image {
        self.images
            .iter()
            .find(|o| o.sha256 == image.sha256)
            .unwrap_or(image)
    }

    /// Whether `image` is an alias of an earlier entry with the same bytes.
    pub fn is_alias(&self, image: &Image) -> bool {
        let c = self.canonical(image);
        !(c.is(&image.vendor, &image.model) && c.version == image.version)
    }

    /// The stored image served at `/firmware/<vendor>/<model>/<version>/<file>`: only canonical
    /// entries, matched exactly (case-sensitive), so the same bytes have one name.
    pub fn served(&self, vendor: &str, model: &str, version: &str, file: &str) -> Option<&Image> {
        self.images.iter().enumerate().find_map(|(i, img)| {
            (self.canonical[i] == i
                && img.vendor == vendor
                && img.model == model
                && img.version == version
                && img.file == file)
                .then_some(img)
        })
    }

    /// The rule that applies to a device: the first rule for its vendor/model that names one of
    /// its groups, else the model-wide rule. With the group that matched.
    pub fn rule(
        &self,
        vendor: &str,
        model: &str,
        groups: &[String],
    ) -> Option<(&FirmwareTargetRule, Option<&str>)> {
        let mine = |r: &&FirmwareTargetRule| {
            r.vendor.eq_ignore_ascii_case(vendor) && r.model.eq_ignore_ascii_case(model)
        };
        let by_group = self.rules.iter().filter(mine).find_map(|r| {
            r.groups
                .iter()
                .find(|g| groups.contains(g))
                .map(|g| (r, Some(g.as_str())))
        });
        by_group.or_else(|| {
            self.rules
                .iter()
                .filter(mine)
                .find(|r| r.groups.is_empty())
                .map(|r| (r, None))
        })
    }

    /// The firmware a device of `vendor`/`model` in `groups` should run, or `None` when no rule
    /// applies or the rule's version is not in the catalogue.
    pub fn target(&self, vendor: &str, model: &str, groups: &[String]) -> Option<FirmwareTarget> {
        let (rule, group) = self.rule(vendor, model, groups)?;
        let image = self.image(vendor, model, &rule.version)?;
        let canonical = self.canonical(image);
        Some(FirmwareTarget {
            vendor: image.vendor.clone(),
            model: image.model.clone(),
            version: image.version.clone(),
            file_name: canonical.file.clone(),
            sha256: canonical.sha256.clone(),
            size: canonical.size,
            url_path: canonical.url_path(),
            group: group.map(str::to_string),
        })
    }

    /// Whether a device reporting `version` runs its target: the target version itself, or
    /// another version label of this vendor/model with the same bytes.
    pub fn is_target_version(
        &self,
        vendor: &str,
        model: &str,
        groups: &[String],
        version: &str,
    ) -> bool {
        let Some(t) = self.target(vendor, model, groups) else {
            return false;
        };
        t.version == version
            || self
                .image(vendor, model, version)
                .is_some_and(|i| i.sha256 == t.sha256)
    }

    /// Where a device stands relative to its current target.
    pub fn state_of(&self, p: &FirmwareProgress) -> ProgressState {
        if p.flagged_at.is_some() {
            return ProgressState::Flagged;
        }
        if self.rule(&p.vendor, &p.model, &p.groups).is_none() {
            return ProgressState::NoTarget;
        }
        match &p.reported_version {
            Some(v) if self.is_target_version(&p.vendor, &p.model, &p.groups, v) => {
                ProgressState::Done
            }
            _ => ProgressState::Pending,
        }
    }
}

/// A device id as the catalogue keys it: a MAC address (12 hex digits, with or without `:`,
/// `-` or `.` separators, any case) becomes 12 lower-case hex digits; anything else is kept as
/// given (trimmed). `None` for an empty, over-long or non-printable id.
pub fn device_key(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let mut hex = [0u8; 12];
    let mut n = 0;
    for b in raw.bytes().filter(|b| !b":-.".contains(b)) {
        if n == hex.len() || !b.is_ascii_hexdigit() {
            n = usize::MAX;
            break;
        }
        hex[n] = b.to_ascii_lowercase();
        n += 1;
    }
    if n == hex.len() {
        // ASCII hex digits only.
        return Some(hex.iter().map(|&b| b as char).collect());
    }
    (!raw.is_empty() && raw.len() <= 128 && !raw.chars().any(char::is_control))
        .then(|| raw.to_string())
}

/// One download of an image by a device (a log row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareFetch {
    pub device: String,
    pub time: i64,
    pub vendor: String,
    pub model: String,
    pub version: String,
    pub sha256: String,
    /// First byte sent (0 = a download from the start; more = a resume).
    pub range_start: u64,
    /// Peer address of the request.
    pub peer: String,
}

/// One device's firmware record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareProgress {
    /// The device key ([`device_key`]).
    pub device: String,
    pub vendor: String,
    pub model: String,
    /// Groups as last reported with the version.
    pub groups: Vec<String>,
    pub reported_version: Option<String>,
    pub reported_at: Option<i64>,
    /// The image last fetched (version label of the served entry, and its sha256).
    pub image_version: Option<String>,
    pub image_sha256: Option<String>,
    /// Downloads from the start of that image since the reported version last changed.
    pub fetches: u32,
    pub first_fetch_at: Option<i64>,
    pub last_fetch_at: Option<i64>,
    /// When the device reported its target version (cleared by a report of another version).
    pub done_at: Option<i64>,
    /// When the device was flagged as probably looping.
    pub flagged_at: Option<i64>,
}

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressState {
    /// Reports its target version.
    Done,
    /// Has a target it does not run yet.
    Pending,
    /// Fetched the same image too often without its version changing.
    Flagged,
    /// No rule applies to it.
    NoTarget,
}

impl ProgressState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressState::Done => "done",
            ProgressState::Pending => "pending",
            ProgressState::Flagged => "flagged",
            ProgressState::NoTarget => "no-target",
        }
    }
}

impl std::fmt::Display for ProgressState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a fetch did to a device's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchEvent {
    /// Counted; not (yet) suspicious.
    Counted { fetches: u32 },
    /// This fetch reached the threshold: the device is now flagged.
    Flagged { fetches: u32 },
    /// Already flagged; counted again.
    StillFlagged { fetches: u32 },
}

impl FirmwareProgress {
    pub fn new(device: &str) -> FirmwareProgress {
        FirmwareProgress {
            device: device.to_string(),
            ..FirmwareProgress::default()
        }
    }

    /// A download of `image` from its first byte. Another image than the last one starts a new
    /// count; `flag_after` downloads of one image without a version change flag the device.
    pub fn record_fetch(&mut self, image: &Image, now: i64, flag_after: u32) -> FetchEvent {
        if self.image_sha256.as_deref() != Some(image.sha256.as_str()) {
            self.image_sha256 = Some(image.sha256.clone());
            self.fetches = 0;
            self.flagged_at = None;
            self.first_fetch_at = Some(now);
        }
        self.image_version = Some(image.version.clone());
        if self.vendor.is_empty() {
            self.vendor = image.vendor.clone();
            self.model = image.model.clone();
        }
        self.fetches = self.fetches.saturating_add(1);
        self.first_fetch_at.get_or_insert(now);
        self.last_fetch_at = Some(now);
        let fetches = self.fetches;
        if self.flagged_at.is_some() {
            FetchEvent::StillFlagged { fetches }
        } else if fetches >= flag_after.max(1) {
            self.flagged_at = Some(now);
            FetchEvent::Flagged { fetches }
        } else {
            FetchEvent::Counted { fetches }
        }
    }

    /// The device reported that it runs `version`; `at_target` says whether that is its target.
    /// A changed version restarts the fetch count and lifts a flag. Returns whether the version
    /// changed.
    pub fn record_report(
        &mut self,
        vendor: &str,
        model: &str,
        groups: &[String],
        version: &str,
        at_target: bool,
        now: i64,
    ) -> bool {
        self.vendor = vendor.to_string();
        self.model = model.to_string();
        self.groups = groups.to_vec();
        let changed = self.reported_version.as_deref() != Some(version);
        if changed {
            self.reported_version = Some(version.to_string());
            self.fetches = 0;
            self.flagged_at = None;
        }
        self.reported_at = Some(now);
        self.done_at = if at_target {
            self.done_at.or(Some(now))
        } else {
            None
        };
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn img(vendor: &str, model: &str, version: &str, file: &str, sha: &str) -> Image {
        Image {
            vendor: vendor.into(),
            model: model.into(),
            version: version.into(),
            file: file.into(),
            size: 10,
            sha256: sha.into(),
            added: 1,
        }
    }

    fn rule(vendor: &str, model: &str, version: &str, groups: &[&str]) -> FirmwareTargetRule {
        FirmwareTargetRule {
            vendor: vendor.into(),
            model: model.into(),
            version: version.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn g(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Add like the CLI does: plan, then append what the plan says.
    fn add(m: &mut Manifest, vendor: &str, model: &str, version: &str, sha: &str) -> AddPlan {
        let file = format!("{model}-{version}.bin");
        let plan = m.plan_add(img(vendor, model, version, &file, sha)).unwrap();
        match &plan {
            AddPlan::Store(e) | AddPlan::Alias { entry: e, .. } => m.images.push(e.clone()),
            AddPlan::AlreadyPresent(_) => {}
        }
        plan
    }

    fn url(c: &FirmwareCatalog, model: &str, groups: &[&str]) -> Option<String> {
        c.target("snom", model, &g(groups)).map(|t| t.url_path)
    }

    #[test]
    fn url_is_the_canonical_entry_path() {
        let mut m = Manifest::default();
        add(&mut m, "snom", "D785", "10.1.1", A);
        assert!(matches!(
            add(&mut m, "snom", "D785", "10.1.2", A),
            AddPlan::Alias { .. }
        ));
        add(&mut m, "snom", "D785", "10.1.3", B);
        let c = FirmwareCatalog::new(m.clone(), &[rule("snom", "D785", "10.1.2", &[])]);
        let t = c.target("snom", "D785", &[]).unwrap();
        // same bytes as 10.1.1: one URL for one content
        assert_eq!(t.url_path, "/firmware/snom/D785/10.1.1/D785-10.1.1.bin");
        assert_eq!(t.version, "10.1.2");
        assert_eq!(t.sha256, A);
        assert!(c
            .served("snom", "D785", "10.1.1", "D785-10.1.1.bin")
            .is_some());
        assert!(
            c.served("snom", "D785", "10.1.2", "D785-10.1.1.bin")
                .is_none(),
            "an alias has no second URL"
        );
        assert!(c
            .served("SNOM", "d785", "10.1.1", "D785-10.1.1.bin")
            .is_none());
        assert!(c.is_alias(c.image("snom", "D785", "10.1.2").unwrap()));
        assert!(!c.is_alias(c.image("snom", "D785", "10.1.1").unwrap()));

        // across models too (Yealink ships one rom for several models)
        add(&mut m, "snom", "D765", "10.1.3", B);
        let c = FirmwareCatalog::new(
            m,
            &[
                rule("snom", "D785", "10.1.3", &[]),
                rule("snom", "D765", "10.1.3", &[]),
            ],
        );
        assert_eq!(url(&c, "D765", &[]), url(&c, "D785", &[]));
        assert_eq!(c.target("snom", "D765", &[]).unwrap().model, "D765");
    }

    #[test]
    fn url_changes_only_with_the_target_content() {
        let mut m = Manifest::default();
        add(&mut m, "snom", "D785", "1", A);
        add(&mut m, "snom", "D785", "1b", A);
        add(&mut m, "snom", "D785", "2", B);
        let at = |v: &str| {
            FirmwareCatalog::new(m.clone(), &[rule("snom", "D785", v, &[])])
                .target("snom", "D785", &[])
                .unwrap()
                .url_path
        };
        // the sequence of targets an operator sets: the URL changes exactly at 1b -> 2
        let urls: Vec<String> = ["1", "1", "1b", "1b", "2", "2"]
            .iter()
            .map(|v| at(v))
            .collect();
        let changes = urls.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 1, "{urls:?}");

        // a later entry, new rules before it, or the request's letter case change nothing
        let mut m2 = m.clone();
        add(&mut m2, "snom", "D785", "3", C);
        let c = FirmwareCatalog::new(
            m2,
            &[
                rule("snom", "D765", "9", &[]),
                rule("snom", "D785", "2", &[]),
            ],
        );
        assert_eq!(c.target("SNOM", "d785", &[]).unwrap().url_path, at("2"));
    }

    #[test]
    fn plan_add_rules() {
        let mut m = Manifest::default();
        assert!(matches!(
            add(&mut m, "snom", "D785", "1", A),
            AddPlan::Store(_)
        ));
        // same bytes again: nothing to do
        assert!(matches!(
            add(&mut m, "snom", "D785", "1", A),
            AddPlan::AlreadyPresent(_)
        ));
        assert_eq!(m.images.len(), 1);
        // other bytes under a known version: refused
        let e = m
            .plan_add(img("Snom", "d785", "1", "x.bin", B))
            .unwrap_err();
        assert_eq!((e.vendor.as_str(), e.existing.as_str()), ("snom", A));
        assert!(e
            .to_string()
            .contains("add the new build under a new version"));
        // the catalogue's spelling of vendor and model wins
        let AddPlan::Store(e) = m
            .plan_add(img("SNOM", "d785", "2", "x.bin", &B.to_uppercase()))
            .unwrap()
        else {
            panic!("new content is stored");
        };
        assert_eq!(
            (e.vendor.as_str(), e.model.as_str(), e.sha256.as_str()),
            ("snom", "D785", B)
        );
        assert_eq!(e.url_path(), "/firmware/snom/D785/2/x.bin");
    }

    #[test]
    fn target_precedence_group_then_model() {
        let mut m = Manifest::default();
        for (v, s) in [("1", A), ("2", B), ("3", C)] {
            add(&mut m, "snom", "D785", v, s);
        }
        add(&mut m, "yealink", "T46S", "66", A);
        let c = FirmwareCatalog::new(
            m,
            &[
                rule("snom", "D785", "1", &[]),
                rule("snom", "D785", "2", &["pilot"]),
                rule("snom", "D785", "3", &["lab", "canary"]),
                rule("yealink", "T46S", "66", &["pilot"]),
            ],
        );
        let v = |groups: &[&str]| c.target("snom", "D785", &g(groups)).map(|t| t.version);
        assert_eq!(v(&[]).as_deref(), Some("1"));
        assert_eq!(v(&["other"]).as_deref(), Some("1"));
        assert_eq!(v(&["pilot"]).as_deref(), Some("2"));
        assert_eq!(v(&["canary"]).as_deref(), Some("3"));
        // a group rule beats the model rule; between group rules the first in the file wins
        assert_eq!(v(&["canary", "pilot"]).as_deref(), Some("2"));
        let t = c.target("Snom", "d785", &g(&["canary"])).unwrap();
        assert_eq!(t.group.as_deref(), Some("canary"));
        assert_eq!((t.vendor.as_str(), t.model.as_str()), ("snom", "D785"));
        // yealink has only a group rule: others get nothing
        assert!(c.target("yealink", "T46S", &[]).is_none());
        assert!(c.target("yealink", "T46S", &g(&["pilot"])).is_some());
        // no rule, or a rule whose version is not in the catalogue
        assert!(c.target("snom", "D120", &[]).is_none());
        let c = FirmwareCatalog::new(Manifest::default(), &[rule("snom", "D785", "1", &[])]);
        assert!(c.rule("snom", "D785", &[]).is_some());
        assert!(c.target("snom", "D785", &[]).is_none());
    }

    #[test]
    fn target_version_includes_aliases() {
        let mut m = Manifest::default();
        add(&mut m, "snom", "D785", "1", A);
        add(&mut m, "snom", "D785", "1b", A);
        add(&mut m, "snom", "D785", "2", B);
        let c = FirmwareCatalog::new(m, &[rule("snom", "D785", "1b", &[])]);
        assert!(c.is_target_version("snom", "D785", &[], "1b"));
        assert!(c.is_target_version("snom", "D785", &[], "1"));
        assert!(!c.is_target_version("snom", "D785", &[], "2"));
        assert!(!c.is_target_version("snom", "D120", &[], "1"));
    }

    #[test]
    fn names() {
        for ok in [
            "snom",
            "D785",
            "10.1.33.33",
            "T46S(T48S,T42S,T41S)-66.86.0.15.rom",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a\\b", "a b", "ä", "a%2f", "x?y",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&"x".repeat(129)));
        assert!(valid_sha256(A));
        assert!(!valid_sha256(&A.to_uppercase()));
        assert!(!valid_sha256("abc"));
    }

    #[test]
    fn device_keys() {
        assert_eq!(device_key("00:04:13:74:17:67").unwrap(), "000413741767");
        assert_eq!(device_key("000413ABCDEF").unwrap(), "000413abcdef");
        assert_eq!(device_key(" 00-90-33-30-00-AF ").unwrap(), "0090333000af");
        assert_eq!(device_key("ip:10.0.0.5").unwrap(), "ip:10.0.0.5");
        assert_eq!(device_key("   "), None);
        assert_eq!(device_key("a\nb"), None);
        // thirteen digits, a non-hex letter, a non-ASCII character: kept as they are
        assert_eq!(device_key("0004137417670").unwrap(), "0004137417670");
        assert_eq!(device_key("00041374176g").unwrap(), "00041374176g");
        assert_eq!(device_key("00041374176ä").unwrap(), "00041374176ä");
    }

    #[test]
    fn a_looping_device_is_flagged_once_and_a_version_change_clears_it() {
        let one = img("snom", "D785", "2", "f.bin", B);
        let mut p = FirmwareProgress::new("000413741767");
        assert!(p.record_report("snom", "D785", &[], "1", false, 10));
        assert_eq!(
            p.record_fetch(&one, 11, 3),
            FetchEvent::Counted { fetches: 1 }
        );
        // reporting the same old version is no change
        assert!(!p.record_report("snom", "D785", &[], "1", false, 12));
        assert_eq!(
            p.record_fetch(&one, 13, 3),
            FetchEvent::Counted { fetches: 2 }
        );
        assert_eq!(
            p.record_fetch(&one, 14, 3),
            FetchEvent::Flagged { fetches: 3 }
        );
        assert_eq!(p.flagged_at, Some(14));
        assert_eq!(
            p.record_fetch(&one, 15, 3),
            FetchEvent::StillFlagged { fetches: 4 }
        );
        // the device finally runs the new version: count and flag start over, done is set
        assert!(p.record_report("snom", "D785", &[], "2", true, 20));
        assert_eq!((p.fetches, p.flagged_at, p.done_at), (0, None, Some(20)));
        assert!(!p.record_report("snom", "D785", &[], "2", true, 30));
        assert_eq!(p.done_at, Some(20));

        // another image starts a new count
        let mut p = FirmwareProgress::new("x");
        p.record_fetch(&one, 1, 3);
        p.record_fetch(&one, 2, 3);
        let other = img("snom", "D785", "3", "g.bin", C);
        assert_eq!(
            p.record_fetch(&other, 3, 3),
            FetchEvent::Counted { fetches: 1 }
        );
        assert_eq!(p.first_fetch_at, Some(3));
        assert_eq!((p.vendor.as_str(), p.model.as_str()), ("snom", "D785"));
    }

    #[test]
    fn states() {
        let mut m = Manifest::default();
        add(&mut m, "snom", "D785", "1", A);
        add(&mut m, "snom", "D785", "2", B);
        let c = FirmwareCatalog::new(m, &[rule("snom", "D785", "2", &[])]);
        let mut p = FirmwareProgress::new("d");
        p.record_report("snom", "D785", &[], "1", false, 1);
        assert_eq!(c.state_of(&p), ProgressState::Pending);
        p.record_report("snom", "D785", &[], "2", true, 2);
        assert_eq!(c.state_of(&p), ProgressState::Done);
        // a device at its target that keeps downloading is looping all the same
        let img2 = c.image("snom", "D785", "2").unwrap().clone();
        for t in 3..6 {
            p.record_fetch(&img2, t, 3);
        }
        assert_eq!(c.state_of(&p), ProgressState::Flagged);
        p.model = "D120".into();
        p.flagged_at = None;
        assert_eq!(c.state_of(&p), ProgressState::NoTarget);
    }

    #[test]
    fn manifest_round_trip() {
        let mut m = Manifest::default();
        add(&mut m, "yealink", "T46S", "66.86.0.15", A);
        let text = m.to_toml_string();
        assert!(text.starts_with("# autoprov firmware catalogue"));
        assert_eq!(Manifest::from_toml_str(&text).unwrap(), m);
        assert_eq!(Manifest::from_toml_str("").unwrap(), Manifest::default());
        let e = Manifest::from_toml_str("[[image]]\nvendor = 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 10));
    }
}
