//! The decision procedure for one update request.
//!
//! It follows the reference's `update.php` step by step, because the order of the lines is part
//! of the wire format: start ruler and summary, snippet candidates, backup command, grace period,
//! certificates, queries, restricted times, firmware and boot code, forced HTTPS and trust,
//! phase progression, CHECK, scripts, URL rewrite, reset. Every decision leaves a `# ...` line;
//! the ones the reference logs (its `notify`) are also stored as device messages.
//!
//! Must not: touch files, sockets or clocks — all of that comes in through [`Ports`] and `now`.

use md5::{Digest, Md5};

use super::certs;
use super::php::{loose_ne, since, wire_bytes, LooseValue};
use super::url::{apply_urlmod, make_full_url, rawurlencode};
use super::*;
use crate::config::{Applies, SiteConfig};
use crate::site::Site;

/// The four arguments every device URL carries (`#t #m #h #i`).
pub const REQUIRED_ARGS: [&str; 4] = ["type", "sn", "hwid", "ip"];

/// Decide what a device gets for this request. Pure apart from the [`Ports`] it is given.
pub fn plan_update(
    site: &Site,
    req: &UpdateRequest,
    state: Option<DeviceState>,
    now: i64,
    ports: &mut dyn Ports,
) -> Outcome {
    plan(site, req, state, now, ports, true)
}

/// [`plan_update`] for answering a device: the same body, state and error, without
/// [`Outcome::notes`] (left empty), which only explanations (`autoprov simulate`, the web
/// UI, the API) show. Saves a copy of every comment line.
pub fn plan_reply(
    site: &Site,
    req: &UpdateRequest,
    state: Option<DeviceState>,
    now: i64,
    ports: &mut dyn Ports,
) -> Outcome {
    plan(site, req, state, now, ports, false)
}

fn plan(
    site: &Site,
    req: &UpdateRequest,
    state: Option<DeviceState>,
    now: i64,
    ports: &mut dyn Ports,
    explain: bool,
) -> Outcome {
    let view = SiteView::new(&site.config, &req.base_url());
    let mut run = Run::new(&view, req, state, now, explain);
    // Each step returns `Err(Stop)` when the reference would end the script there.
    let _ = run.execute(ports);
    run.finish()
}

/// The configuration as the reference sees it after `readConfig`: phases sorted with the
/// fake staging phase, URLs made absolute, empty values unset. The phase order is derived
/// once per configuration ([`EngineIndex`]); only the URLs depend on the request.
pub struct SiteView<'a> {
    pub cfg: &'a SiteConfig,
    /// Phase ids in order.
    pub phases: &'a [String],
    pub lastphase: Option<&'a str>,
    pub fakelastphase: Option<&'a str>,
    pub fwstorage: String,
    pub base: String,
}

/// The phase order of a configuration (see [`SiteView`]).
#[derive(Debug, Default)]
struct PhaseOrder {
    phases: Vec<String>,
    lastphase: Option<String>,
    fakelastphase: Option<String>,
}

impl PhaseOrder {
    fn of(cfg: &SiteConfig) -> PhaseOrder {
        let mut phases: Vec<(i64, String)> = Vec::new();
        for p in &cfg.phases {
            // A later phase with the same seq replaces the earlier one (PHP array keyed by seq).
            phases.retain(|(s, _)| *s != p.seq);
            phases.push((p.seq, p.id.clone()));
        }
        phases.sort_by_key(|(s, _)| *s);
        let lastphase = phases.last().map(|(_, id)| id.clone());
        let fakelastphase = lastphase.as_ref().map(|l| format!("_first_{l}"));
        let fake = cfg
            .times
            .first_phase
            .unwrap_or(!cfg.times.allow.trim().is_empty() && cfg.times.forcestaging);
        if fake {
            if let (Some((seq, _)), Some(f)) = (phases.last().cloned(), fakelastphase.clone()) {
                let n = phases.len();
                phases[n - 1].0 = seq + 1;
                phases.insert(n - 1, (seq, f));
            }
        }
        PhaseOrder {
            phases: phases.into_iter().map(|(_, id)| id).collect(),
            lastphase,
            fakelastphase,
        }
    }
}

impl<'a> SiteView<'a> {
    pub fn new(cfg: &'a SiteConfig, base: &str) -> SiteView<'a> {
        let order = &cfg.engine_index.get_or_init(|| EngineIndex::of(cfg)).phases;
        SiteView {
            cfg,
            phases: &order.phases,
            lastphase: order.lastphase.as_deref(),
            fakelastphase: order.fakelastphase.as_deref(),
            fwstorage: make_full_url(base, &cfg.fwstorage.url),
            base: base.to_string(),
        }
    }

    fn first_phase(&self) -> String {
        self.phases.first().cloned().unwrap_or_default()
    }

    fn next_phase(&self, phase: &str) -> Option<String> {
        let i = self.phases.iter().position(|p| p == phase)?;
        self.phases.get(i + 1).cloned()
    }

    /// `times@polling`, or the integer 0 when unset.
    fn polling(&self) -> LooseValue {
        let p = self.cfg.times.polling.trim();
        if p.is_empty() {
            LooseValue::Int(0)
        } else {
            LooseValue::Str(p.to_string())
        }
    }

    fn polling_text(&self) -> String {
        match self.polling() {
            LooseValue::Str(s) => s,
            _ => "0".into(),
        }
    }

    fn classes_of(&self, device_type: &str) -> Vec<String> {
        let t = device_type.to_lowercase();
        let mut out = self
            .index()
            .model_classes
            .get(&t)
            .cloned()
            .unwrap_or_default();
        if !out.contains(&t) {
            out.push(t);
        }
        out
    }

    fn index(&self) -> &EngineIndex {
        self.cfg
            .engine_index
            .get_or_init(|| EngineIndex::of(self.cfg))
    }

    fn environment(&self, id: &str) -> Option<&crate::config::Environment> {
        self.cfg.environments.iter().find(|e| e.id == id)
    }

    /// The firmware URL for a build (`getFWStorage`).
    pub fn fw_url(&self, build: &str, model: &str, filetype: &str) -> String {
        let lmodel = model.to_lowercase();
        let mut root = lmodel.split('-').next().unwrap_or("").to_string();
        let mut prefix = "";
        if let Some(r) = root.strip_prefix("ip") {
            root = r.to_string();
            prefix = "ip";
        }
        let mut filename = match filetype {
            "prot" => format!("{prefix}{root}.bin"),
            "boot" => format!("boot{root}.bin"),
            _ => format!("{lmodel}.unknown"),
        };
        if let Some(over) = self
            .cfg
            .filenames
            .iter()
            .filter(|f| f.model == lmodel)
            .find_map(|f| match filetype {
                "prot" => f.prot.clone(),
                "boot" => f.boot.clone(),
                _ => None,
            })
        {
            filename = over;
        }
        self.fwstorage
            .replace("{build}", build)
            .replace("{model}", model)
            .replace("{filetype}", filetype)
            .replace("{filename}", &filename)
    }
}

/// The two images a device loads, with the words the reference uses for each.
#[derive(Clone, Copy)]
struct Image {
    /// `prot` / `boot`: the command and the `{filetype}` placeholder.
    filetype: &'static str,
    /// The argument carrying the running build.
    arg: &'static str,
    long: &'static str,
    short: &'static str,
}

impl Image {
    const FIRMWARE: Image = Image {
        filetype: "prot",
        arg: "PROT",
        long: "firmware",
        short: "firmware",
    };
    const BOOTCODE: Image = Image {
        filetype: "boot",
        arg: "BOOT",
        long: "boot code",
        short: "bootcode",
    };
}

/// Set a text field of the state, reusing its buffer (a poll mostly writes what it read).
fn assign(slot: &mut Option<String>, v: &str) {
    match slot {
        Some(s) => {
            s.clear();
            s.push_str(v);
        }
        None => *slot = Some(v.to_string()),
    }
}

/// [`assign`] of `parts` joined with `sep`.
fn assign_joined(slot: &mut Option<String>, parts: &[String], sep: &str) {
    let s = slot.get_or_insert_with(String::new);
    s.clear();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        s.push_str(p);
    }
}

/// `parts` joined with a separator, formatted in place.
struct Joined<'a>(&'a [String], &'a str);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            f.write_str(p)?;
        }
        Ok(())
    }
}

/// Marker: the reference stops the script here.
pub(crate) struct Stop;

type Step = Result<(), Stop>;

pub(crate) struct Run<'a> {
    pub view: &'a SiteView<'a>,
    pub req: &'a UpdateRequest,
    pub now: i64,
    out: String,
    /// The explanations, when asked for (see [`plan_reply`]).
    notes: Option<Vec<String>>,
    /// Working state; stored only when `tracking` and `persist`.
    pub state: DeviceState,
    /// Whether per-device state is kept (status enabled and an `sn` given).
    pub tracking: bool,
    persist: bool,
    error: Option<String>,
    /// `polling` and `phase` as they will go into a rewritten URL, plus whether one changed.
    stateargs: Vec<(String, Option<String>)>,
    statechanged: bool,
    missing: Vec<&'static str>,
    phase: Option<String>,
    nextphase: Option<String>,
    /// Site-relative files the caller should delete (see [`Outcome::remove_files`]).
    remove_files: Vec<String>,
}

impl<'a> Run<'a> {
    fn new(
        view: &'a SiteView<'a>,
        req: &'a UpdateRequest,
        state: Option<DeviceState>,
        now: i64,
        explain: bool,
    ) -> Run<'a> {
        let sn = req.arg("sn").unwrap_or("");
        let tracking = view.cfg.status.enabled && !sn.is_empty();
        let mut st = state.unwrap_or_else(|| DeviceState::new(sn, now));
        st.sn = sn.to_string();
        st.seen = now;
        let stateargs = ["polling", "phase"]
            .iter()
            .map(|k| (k.to_string(), req.arg(k).map(|s| s.to_string())))
            .collect();
        Run {
            view,
            req,
            now,
            // The answer of a device in its final phase is ~2.5 KB: one allocation.
            out: String::with_capacity(4096),
            notes: explain.then(|| Vec::with_capacity(16)),
            state: st,
            tracking,
            persist: false,
            error: None,
            stateargs,
            statechanged: false,
            missing: Vec::new(),
            phase: None,
            nextphase: None,
            remove_files: Vec::new(),
        }
    }

    // ----- output primitives -------------------------------------------------------------

    pub fn print(&mut self, s: &str) {
        self.out.push_str(s);
    }

    pub fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push_str("\r\n");
    }

    /// [`Run::line`] of formatted text, written in place (no temporary string).
    pub fn line_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        // Writing into a String cannot fail.
        let _ = self.out.write_fmt(args);
        self.out.push_str("\r\n");
    }

    /// `# <msg>` as a line.
    fn hash_line(&mut self, msg: &str) {
        self.out.push_str("# ");
        self.line(msg);
    }

    /// A `# ` line that explains a decision but is not logged on the device.
    pub fn comment(&mut self, msg: &str) {
        self.hash_line(msg);
        if !msg.is_empty() {
            self.note(msg);
        }
    }

    /// [`Run::comment`] of formatted text, written in place (copied only as an explanation).
    fn comment_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        let start = self.fmt_hash_line(args);
        if self.notes.is_some() && self.out.len() - 2 > start {
            let msg = self.out[start..self.out.len() - 2].to_string();
            self.note(&msg);
        }
    }

    /// [`Run::notify`] of formatted text, written in place.
    fn notify_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        let start = self.fmt_hash_line(args);
        let msg = &self.out[start..self.out.len() - 2];
        if !msg.is_empty() {
            if let Some(notes) = &mut self.notes {
                notes.push(msg.to_string());
            }
        }
        if self.tracking {
            self.state.add_msg(msg, self.now);
        }
    }

    /// `# <args>\r\n` written out; returns where the formatted text starts.
    fn fmt_hash_line(&mut self, args: std::fmt::Arguments<'_>) -> usize {
        use std::fmt::Write;
        self.out.push_str("# ");
        let start = self.out.len();
        // Writing into a String cannot fail.
        let _ = self.out.write_fmt(args);
        self.out.push_str("\r\n");
        start
    }

    /// Keep `msg` as an explanation, when explanations are asked for.
    fn note(&mut self, msg: &str) {
        if let Some(notes) = &mut self.notes {
            notes.push(msg.to_string());
        }
    }

    /// The reference's `notify`: printed, explained and kept as a device message.
    pub fn notify(&mut self, msg: &str) {
        self.hash_line(msg);
        if !msg.is_empty() {
            self.note(msg);
        }
        if self.tracking {
            self.state.add_msg(msg, self.now);
        }
    }

    /// `notify($msg, true)`: log, store state, stop.
    pub fn notify_stop(&mut self, msg: &str) -> Step {
        self.notify(msg);
        self.persist = true;
        Err(Stop)
    }

    /// The reference's `bailout`: a fatal error, the state is not stored.
    pub fn bailout(&mut self, msg: &str) -> Step {
        self.line_fmt(format_args!("# {msg} - exit"));
        self.note(msg);
        self.error = Some(msg.to_string());
        self.persist = false;
        Err(Stop)
    }

    /// Ask the caller to delete a site-relative file once the answer is decided.
    pub fn remove_file(&mut self, rel: &str) {
        if !self.remove_files.iter().any(|f| f == rel) {
            self.remove_files.push(rel.to_string());
        }
    }

    fn set_state_arg(&mut self, key: &str, value: LooseValue) {
        let text = match &value {
            LooseValue::Str(s) => Some(s.clone()),
            LooseValue::Int(i) => Some(i.to_string()),
            LooseValue::Null => None,
        };
        let cur = self.stateargs.iter().position(|(k, _)| k == key);
        let current = cur.and_then(|i| self.stateargs[i].1.clone());
        if loose_ne(current.as_deref(), &value) {
            match cur {
                Some(i) => self.stateargs[i].1 = text,
                None => self.stateargs.push((key.to_string(), text)),
            }
            self.statechanged = true;
        }
    }

    fn finish(mut self) -> Outcome {
        let state = if self.tracking && self.persist {
            self.state
                .prune_msgs(self.now, self.view.cfg.status.logkeep as i64);
            Some(self.state)
        } else {
            None
        };
        Outcome {
            body: self.out,
            notes: self.notes.unwrap_or_default(),
            state,
            error: self.error,
            remove_files: self.remove_files,
        }
    }

    // ----- the request -------------------------------------------------------------------

    fn execute(&mut self, ports: &mut dyn Ports) -> Step {
        let cfg = self.view.cfg;
        self.notify("");

        for key in REQUIRED_ARGS {
            if self.req.arg(key).is_none() {
                self.missing.push(key);
            }
        }
        if !self.missing.is_empty() {
            if self.req.arg("phase").is_none() {
                let first = self.view.first_phase();
                self.set_state_arg("phase", LooseValue::Str(first));
            }
            if self.req.arg("polling").is_none() {
                self.set_state_arg("polling", self.view.polling());
            }
            self.rewrite_url(None);
            return Err(Stop);
        }
        let req = self.req;
        let sn = req.arg("sn").unwrap_or("");
        if let Err(why) = check_serial(sn) {
            self.tracking = false;
            return self.bailout(&format!("invalid sn '{sn}': {why}"));
        }
        let device_type = req.arg("type").unwrap_or("");
        if let Err(why) = check_type(device_type) {
            self.tracking = false;
            return self.bailout(&format!("invalid type '{device_type}': {why}"));
        }

        let classes = self.view.classes_of(device_type);
        assign(&mut self.state.device.device_type, device_type);
        assign_joined(&mut self.state.device.classes, &classes, ", ");

        // Addresses: peer, or the first X-Forwarded-For entry behind a proxy.
        let peer = req.peer_ip.strip_prefix("::ffff:").unwrap_or(&req.peer_ip);
        match &req.forwarded_for {
            Some(xff) => {
                let first = xff.split(',').next().unwrap_or("");
                assign(&mut self.state.device.ip, first);
                self.state.device.rp = true;
                assign(&mut self.state.device.proxy, peer);
            }
            None => {
                assign(&mut self.state.device.ip, peer);
                self.state.device.rp = false;
            }
        }

        // Phase.
        let phase = match req.arg("phase") {
            None | Some("") | Some("0") => self.view.first_phase(),
            Some(p) => {
                if !self.view.phases.iter().any(|x| x == p) {
                    let msg = format!("invalid phase: '{p}'");
                    return self.notify_stop(&msg);
                }
                p.to_string()
            }
        };
        let nextphase = self.view.next_phase(&phase);
        self.phase = Some(phase.clone());
        self.nextphase = nextphase.clone();
        assign(&mut self.state.device.phase, &phase);

        // Environments (with the reference's array-union quirk: with several `env` values,
        // later expansions only add entries beyond the length already reached).
        let rawenvs: Vec<String> = match req.arg("env") {
            None => cfg
                .environments
                .first()
                .map(|e| vec![e.id.clone()])
                .unwrap_or_default(),
            Some(e) => e.split(',').map(|s| s.to_string()).collect(),
        };
        let mut envs: Vec<String> = Vec::new();
        for env in &rawenvs {
            let Some(def) = self.view.environment(env) else {
                let msg = format!(
                    "invalid environment: '{env}' ({})",
                    req.arg("env").unwrap_or("")
                );
                return self.notify_stop(&msg);
            };
            let mut expanded = vec![env.clone()];
            expanded.extend(def.implies.iter().map(|i| i.trim().to_string()));
            for (i, e) in expanded.into_iter().enumerate() {
                if i >= envs.len() {
                    envs.push(e);
                }
            }
        }
        assign_joined(&mut self.state.device.environments, &envs, ", ");

        self.notify_fmt(format_args!(
            "phase: {phase}, nextphase: {}, environment: {}, type: {device_type}, classes: {}",
            nextphase.as_deref().unwrap_or(""),
            Joined(&envs, "+"),
            Joined(&classes, "+")
        ));

        if self.tracking {
            if let Some(t) = self.state.skipnext.take() {
                let msg = format!("skipnext: {}", since(self.now, t));
                self.state.add_msg(&msg, self.now);
                self.line(
                    "# need up-to-date query state, skipping update script, doing queries only",
                );
                self.queries(&classes, &envs);
                self.persist = true;
                return Err(Stop);
            }
        }

        // Snippet candidates.
        let scriptdir = cfg.times.dir.clone();
        self.line("");
        self.line_fmt(format_args!("# existing files (from {scriptdir}):"));
        let devicescript = sn.to_lowercase().replace('-', "_");
        let candidates = Candidates::new(
            self.view,
            &scriptdir,
            &phase,
            &classes,
            &envs,
            &devicescript,
        );
        let mut existing: Vec<(String, ScriptFile)> = Vec::new();
        // Absent candidates by index, written out from the list below.
        let mut absent: Vec<usize> = Vec::new();
        let mut newest: Option<(i64, String)> = None;
        let mut f = String::with_capacity(64);
        for i in 0..candidates.len() {
            f.clear();
            candidates.write(i, &mut f);
            match ports.script(&f) {
                Some(sf) => {
                    if newest
                        .as_ref()
                        .map(|(t, _)| sf.mtime > *t)
                        .unwrap_or(sf.mtime > 0)
                    {
                        newest = Some((sf.mtime, f.clone()));
                    }
                    existing.push((f.clone(), sf));
                }
                None => absent.push(i),
            }
        }
        for (f, sf) in &existing {
            let s = since(self.now, sf.mtime);
            self.line_fmt(format_args!("# > {f}: {s}"));
        }
        self.line("");
        self.line_fmt(format_args!("# possible further files (from {scriptdir}):"));
        for &i in &absent {
            self.out.push_str("# ");
            candidates.write(i, &mut self.out);
            self.out.push_str("   \r\n");
        }
        self.line("");

        // Backups.
        let backup_cmd =
            (!cfg.backup.dir.is_empty() && cfg.backup.nbackups > 0 && !cfg.backup.scfg.is_empty())
                .then(|| {
                    format!(
                        "mod cmd UP0 scfg {}",
                        make_full_url(&self.view.base, &cfg.backup.scfg)
                    )
                });
        match backup_cmd {
            Some(cmd) => {
                if cfg.times.forcehttps && !req.https {
                    self.notify("backups enabled but forcehttps is true and not using HTTPS");
                } else {
                    self.line("");
                    self.line(&cmd);
                }
            }
            None => {
                self.line("");
                self.notify("Backups not enabled in config");
            }
        }

        // Grace period.
        if let Some((t, f)) = &newest {
            let age = self.now - t;
            let grace = cfg.times.grace as i64;
            self.line("");
            self.line_fmt(format_args!("# newest script ({f}) {age}s old"));
            if age < grace {
                let msg = format!(
                    "files being updated ({f} {age}s old, waiting for at least {grace}s to expire)"
                );
                return self.notify_stop(&msg);
            }
        }

        // Certificates (decided now, sent after firmware).
        self.line("");
        let certs = certs::decide(self, ports, device_type)?;
        if let Some(last) = certs.msgs.last() {
            self.state.device.certstat = Some(last.clone());
        }

        self.queries(&classes, &envs);

        // Restricted times.
        let staging = self.view.lastphase != Some(phase.as_str());
        if let Some(times) = self.times_cmd(staging) {
            self.line("");
            self.line("# Restricted times");
            self.line(&times);
        }

        // Firmware and boot code.
        self.line("");
        let reset = self.firmware(ports, device_type, &classes, &envs)?;
        if let Some(p) = req.arg("PROT") {
            self.state.firmware.build = Some(p.to_string());
        }
        if let Some(b) = req.arg("BOOT") {
            self.state.bootcode.build = Some(b.to_string());
        }
        if let Some(h) = req.arg("hwid") {
            self.state.device.hwid = Some(h.to_string());
        }
        if let Some(i) = req.arg("ip") {
            self.state.device.realip = Some(i.to_string());
        }
        if reset {
            self.line("# make sure remaining update scripts are executed with up-to-date firmware and update URL");
            self.line("iresetn");
        }

        // Certificate commands, when any, end the script.
        for m in &certs.msgs {
            self.notify_fmt(format_args!("certificates: {m} "));
        }
        if let Some(cmds) = certs.cmds {
            for (comment, cmd) in cmds {
                self.notify_fmt(format_args!("certificates: {comment}"));
                self.line(&cmd);
            }
            self.set_state_arg("polling", self.view.polling());
            if !self.rewrite_url(None) {
                self.line("config write");
                self.line("config activate");
            }
            self.line("iresetn");
            return self.notify_stop("certificate cmds need to process - no further cmds");
        }
        self.line("# no certificate cmds required - processing normal updates");

        // Forced HTTPS and trust.
        if cfg.times.forcehttps {
            let need = cfg.times.httpsport.unwrap_or(443);
            let have = if req.https {
                Some(req.server_port.unwrap_or(443))
            } else {
                None
            };
            if have != Some(need) {
                self.set_state_arg("polling", self.view.polling());
                self.rewrite_url(Some(have));
                let msg = format!(
                    "forcehttps - currently {}using HTTPS on port {}, new polling: {}",
                    if req.https { "" } else { "NOT " },
                    have.map(|p| p.to_string()).unwrap_or_default(),
                    self.view.polling_text()
                );
                return self.notify_stop(&msg);
            }
            if cfg.times.forcetrust {
                self.check_trust()?;
            }
        }

        self.line("");
        match &nextphase {
            Some(n) => {
                self.set_state_arg("phase", LooseValue::Str(n.clone()));
                self.set_state_arg("polling", self.view.polling());
            }
            None => self.set_state_arg("polling", LooseValue::Int(0)),
        }

        // Dynamic snippets, computed over the state as it stands now.
        let dynamic = match ports.dynamic(&self.state) {
            Ok(d) => d,
            Err(e) => match cfg.scripting.hook_failure {
                crate::config::HookFailure::Skip => {
                    self.notify_fmt(format_args!("{e} - continuing without dynamic snippets"));
                    DynamicSnippets::default()
                }
                crate::config::HookFailure::Fail => {
                    self.error = Some(e.clone());
                    return self.notify_stop(&format!("{e} - not delivering any snippets"));
                }
            },
        };
        let files: Vec<(String, ScriptFile)> = if dynamic.send_standard {
            existing
        } else {
            Vec::new()
        };
        if !dynamic.send_standard {
            self.comment("standard snippets suppressed by dynamic scripting");
        }

        let mut deliver = true;
        let mut sig: Option<String> = None;
        if nextphase.is_none() && cfg.times.check {
            let s = files_signature(&dynamic.pre, &files, &dynamic.post);
            if req.arg("CHECK") == Some(s.as_str()) {
                deliver = false;
            }
            sig = Some(s);
        }

        if deliver {
            for l in &dynamic.pre {
                self.line(l);
            }
            for (f, sf) in &files {
                self.notify_fmt(format_args!("    {f}"));
                self.line_fmt(format_args!("# {{ \r\n# begin script '{f}' "));
                match &sf.content {
                    Ok(text) => {
                        self.line(text);
                        let (now, mtime) = (self.now, sf.mtime);
                        self.state.delivered(f, now, mtime);
                    }
                    Err(why) => {
                        self.notify_fmt(format_args!("cannot read script '{f}': {why}"));
                    }
                }
                self.line_fmt(format_args!("# end script '{f}'\r\n# }}"));
            }
            for l in &dynamic.post {
                self.line(l);
            }
            self.line("");
            self.line("# end of all scripts ");
            if !self.rewrite_url(None) {
                self.line("config write");
                self.line("config activate");
            }
            if let Some(s) = &sig {
                self.line("# set CHECK var");
                self.line_fmt(format_args!("mod cmd UP1 check ser {s}"));
            }
            self.line("# trigger reset if required");
            self.line("iresetn");
        } else {
            let s = sig.unwrap_or_default();
            self.line_fmt(format_args!(
                "# not delivering any snippets - CHECK serial {s} is good"
            ));
            self.rewrite_url(None);
        }
        self.persist = true;
        Ok(())
    }

    /// Query commands for the device's classes/environments (`doQueries`).
    fn queries(&mut self, classes: &[String], envs: &[String]) {
        let cfg = self.view.cfg;
        let url = format!(
            "mod cmd UP0 scfg {}",
            make_full_url(&self.view.base, &cfg.queries.scfg)
        );
        let mut found: Vec<(String, String)> = Vec::new();
        for q in &cfg.queries.query {
            if q.applies.iter().any(|a| applies(a, classes, envs)) {
                let cmd = format!(
                    "{url}&id={} ser nop /always {}",
                    rawurlencode(&q.id),
                    rawurlencode(q.cmd.trim())
                );
                found.retain(|(id, _)| *id != q.id);
                found.push((q.id.clone(), cmd));
            }
        }
        if found.is_empty() {
            self.line_fmt(format_args!(
                "# no queries defined for any of callers classes: {}",
                classes.join("+")
            ));
        } else {
            for (id, cmd) in found {
                self.line_fmt(format_args!("# query '{id}'"));
                self.line(&cmd);
            }
        }
    }

    /// `mod cmd UP1 times ...` (`getTimes`), `None` when neither allow nor initial is set.
    fn times_cmd(&mut self, staging: bool) -> Option<String> {
        let t = &self.view.cfg.times;
        let allow = t.allow.trim();
        let initial = t.initial.trim();
        if allow.is_empty() && initial.is_empty() {
            return None;
        }
        let mut times = String::new();
        if !(staging && t.forcestaging) {
            if !allow.is_empty() {
                times.push_str(&format!(" /allow {allow}"));
            }
        } else {
            self.print("\r\n# Skip restricted times, initial staging / forcestaging\r\n");
            self.note("Skip restricted times, initial staging / forcestaging");
        }
        if !initial.is_empty() {
            times.push_str(&format!(" /initial {initial}"));
        }
        (!times.is_empty()).then(|| format!("mod cmd UP1 times {times}"))
    }

    /// Firmware and boot code commands. Returns whether a reset is needed.
    fn firmware(
        &mut self,
        ports: &mut dyn Ports,
        device_type: &str,
        classes: &[String],
        envs: &[String],
    ) -> Result<bool, Stop> {
        let m = &self.view.cfg.master;
        if m.info.trim().is_empty() {
            self.comment("firmware and boot code updates disabled (no master info)");
            return Ok(false);
        }
        if let Some(a) = m.applies.iter().find(|a| !applies(a, classes, envs)) {
            let what = if a.env { "environment" } else { "class" };
            self.comment_fmt(format_args!(
                "firmware and boot code updates restricted to {what} '{}' - not for this device",
                a.value
            ));
            return Ok(false);
        }
        let mut master: Option<Result<(String, String), String>> = None;
        let mut from_master = |run: &mut Run, which: usize| -> Result<Option<String>, Stop> {
            if run.view.cfg.master.info.trim() == "none" {
                run.comment("master info is 'none' - cannot take builds from the master device");
                return Ok(None);
            }
            if master.is_none() {
                let look = ports.master();
                for n in &look.notes {
                    run.comment(n);
                }
                master = Some(look.builds);
            }
            match master.as_ref().expect("set above") {
                Ok((p, b)) => Ok(Some(if which == 0 { p.clone() } else { b.clone() })),
                Err(e) => {
                    let e = e.clone();
                    run.bailout(&e).map(|_| None)
                }
            }
        };
        let prot = match m.firmware.trim() {
            "none" => {
                self.comment("firmware update disabled");
                None
            }
            "master" | "" => {
                let p = from_master(self, 0)?;
                if let Some(p) = &p {
                    self.comment_fmt(format_args!("firmware taken from master device ({p})"));
                }
                p
            }
            n => {
                self.comment_fmt(format_args!("firmware fixed to {n}"));
                Some(n.to_string())
            }
        };
        let boot = match m.bootcode.trim() {
            "none" => {
                self.comment("bootcode update disabled");
                None
            }
            "firmware" => {
                self.comment("bootcode derived from firmware");
                prot.clone()
            }
            "master" | "" => {
                let b = from_master(self, 1)?;
                if let Some(b) = &b {
                    self.comment_fmt(format_args!("bootcode taken from master device ({b})"));
                }
                b
            }
            n => {
                self.comment_fmt(format_args!("bootcode fixed to {n}"));
                Some(n.to_string())
            }
        };
        let type_lower = device_type.to_lowercase();
        let index = self.view.index();
        let nofirm = index.nofirm.contains(&type_lower);
        let noboot = index.noboot.contains(&type_lower);
        let mut line = String::with_capacity(index.nofirm_joined.len() + device_type.len() + 40);
        line.push_str("nofirm: ");
        line.push_str(&index.nofirm_joined);
        line.push_str(". This device type=");
        line.push_str(device_type);
        self.comment(&line);
        line.clear();
        line.push_str("noboot: ");
        line.push_str(&index.noboot_joined);
        self.comment(&line);

        let mut reset = false;
        if let Some(p) = self.image(Image::FIRMWARE, prot.filter(|_| !nofirm), device_type) {
            self.state.firmware.requested = Some(p);
            self.state.firmware.requested_at = Some(self.now);
            reset = true;
        }
        if let Some(b) = self.image(Image::BOOTCODE, boot.filter(|_| !noboot), device_type) {
            self.state.requested = Some(format!("{b}bootcode"));
            self.state.bootcode.requested_at = Some(self.now);
            reset = true;
        }
        Ok(reset)
    }

    /// Compare one image (firmware or boot code) with what the device reports and send the
    /// download command when they differ. Returns the build requested.
    fn image(&mut self, kind: Image, wanted: Option<String>, device_type: &str) -> Option<String> {
        let Some(build) = wanted else {
            self.comment_fmt(format_args!(
                "no {} update for device of type '{device_type}'",
                kind.short
            ));
            return None;
        };
        let have = self.req.arg(kind.arg);
        let differs = have
            .map(|h| loose_ne(Some(h), &LooseValue::Str(build.clone())))
            .unwrap_or(true);
        if !differs {
            self.comment_fmt(format_args!("{} {build} good", kind.long));
            return None;
        }
        self.notify_fmt(format_args!(
            "current {} ({}) does not match required {} ({build})",
            kind.long,
            have.unwrap_or("unknown"),
            kind.long
        ));
        let url = self.view.fw_url(&build, device_type, kind.filetype);
        self.line_fmt(format_args!(
            "mod cmd UP0 {} {url} ser {build}",
            kind.filetype
        ));
        Some(build)
    }

    /// `forcetrust`: the TLS client certificate must name this device and come from a
    /// trusted issuer.
    fn check_trust(&mut self) -> Step {
        let cc = &self.view.cfg.customcerts;
        if cc.caname.trim().is_empty() {
            return self.bailout("certificates: customcerts/@CAname must be defined for certificate trust enforcement");
        }
        let sep = if cc.canamesep.is_empty() {
            ","
        } else {
            cc.canamesep.as_str()
        };
        let good: Vec<String> = cc.caname.split(sep).map(|s| s.to_string()).collect();
        if let Some(xff) = &self.req.forwarded_for {
            // A reverse proxy ends TLS itself: the device's certificate never reaches us.
            let msg = format!(
                "cannot verify the device certificate through a reverse proxy ({} via {}): MTLS needs a direct connection - let devices reach the MTLS port without the proxy",
                xff.split(',').next().unwrap_or("").trim(),
                self.req.peer_ip.strip_prefix("::ffff:").unwrap_or(&self.req.peer_ip)
            );
            return self.notify_stop(&msg);
        }
        let Some(cert) = self.req.client_cert.clone() else {
            return self.notify_stop(
                "cannot verify CN with HTTPS: SSL_CLIENT_S_DN_CN not present - fix web server configuration or use MTLS-enabled port!",
            );
        };
        let required = self.req.arg("hwid").unwrap_or("").to_string();
        let alternative = self.req.arg("sn").unwrap_or("").replace('-', "");
        let mut parts: Vec<String> = cert.subject_cn.split('-').map(|s| s.to_string()).collect();
        for (broken, fix) in [
            ("IP222s", "IP222"),
            ("IP232s", "IP232"),
            ("IP240a", "IP240"),
            ("IP200a", "IP200"),
        ] {
            if parts[0] == broken {
                parts[0] = fix.to_string();
                break;
            }
        }
        let shown = parts.join("-");
        let wildcard = (!cc.cawildcard.is_empty()).then(|| cc.cawildcard.clone());
        if shown != required && shown != alternative && wildcard.as_deref() != Some(shown.as_str())
        {
            let msg = format!("Device claims to be '{required} / {alternative}' but identifies as '{shown}' by TLS");
            return self.notify_stop(&msg);
        }
        let verify = match (&cert.verified, &cert.verify_error) {
            (true, _) => "SUCCESS".to_string(),
            (false, Some(why)) => format!("FAILED:{why}"),
            (false, None) => "FAILED".to_string(),
        };
        if !cert.verified {
            let msg = format!("TLS certificate ({shown}) not trusted -- {verify}");
            return self.notify_stop(&msg);
        }
        if cert.issuer_cn.is_empty() || !good.contains(&cert.issuer_cn) {
            let msg = format!(
                "TLS certificate issuer ({}) not trusted for TLS certificate ({shown}) -- {verify}",
                cert.issuer_cn
            );
            return self.notify_stop(&msg);
        }
        let msg = format!(
            "good certificate(CN='{shown}', ISSUER='{}')",
            cert.issuer_cn
        );
        self.notify(&msg);
        Ok(())
    }

    /// The URL rewrite block (`rewriteUrl`). `https` is `Some(current https port)` when HTTPS
    /// is being forced. Returns whether a rewrite was sent.
    fn rewrite_url(&mut self, https: Option<Option<u16>>) -> bool {
        let cfg = self.view.cfg;
        self.line("");
        if !(self.statechanged || !self.missing.is_empty() || https.is_some()) {
            return false;
        }
        if self.statechanged {
            let newpolling = self
                .stateargs
                .iter()
                .find(|(k, _)| k == "polling")
                .and_then(|(_, v)| v.clone());
            if let Some(np) = newpolling {
                let reqpolling = if self.missing.is_empty() {
                    self.req.arg("polling")
                } else {
                    None
                };
                if loose_ne(reqpolling, &LooseValue::Str(np.clone())) {
                    if !loose_ne(Some(np.as_str()), &LooseValue::Int(0)) {
                        self.notify("turn off fast polling");
                        self.line("mod cmd UP1 provision 0");
                        self.line("config rem UP1 /provision");
                        self.line_fmt(format_args!("config add UP1 /poll {}", cfg.times.interval));
                    } else {
                        self.notify_fmt(format_args!("turn on fast polling ({np})"));
                        let p = self.view.polling_text();
                        self.line_fmt(format_args!("mod cmd UP1 provision {p}"));
                        self.line("config add UP1 /poll 1");
                    }
                }
            }
        }
        let mut args: Vec<(String, String)> = Vec::new();
        if self.statechanged {
            for (k, v) in &self.stateargs {
                args.push((k.clone(), v.clone().unwrap_or_default()));
            }
        }
        for k in &self.missing {
            if !args.iter().any(|(a, _)| a == k) {
                args.push((k.to_string(), String::new()));
            }
        }
        for (k, v) in &self.req.args {
            if !args.iter().any(|(a, _)| a == k) {
                args.push((k.clone(), v.clone()));
            }
        }
        let finalargs: Vec<String> = args
            .iter()
            .filter_map(|(k, v)| match cfg.stdargs.iter().find(|s| &s.key == k) {
                Some(s) => s.value.as_ref().map(|val| format!("{k}={val}")),
                None => Some(format!("{k}={}", rawurlencode(v))),
            })
            .collect();
        let mut newurl = format!("{}?{}", self.req.script_url(), finalargs.join("&"));
        if let Some(current_port) = https {
            let httpsport = cfg
                .times
                .httpsport
                .map(|p| p.to_string())
                .unwrap_or_default();
            let current = current_port.map(|p| p.to_string()).unwrap_or_default();
            if !self.req.https || current != httpsport {
                self.notify_fmt(format_args!(
                    "using HTTP and 'forcehttps' is set or wrong port ({current}) -> need to switch to HTTPS on port {httpsport}"
                ));
                newurl = switch_to_https(&newurl, &httpsport);
                if !cfg.times.httpsurlmod.is_empty() {
                    match apply_urlmod(&cfg.times.httpsurlmod, &newurl) {
                        Ok(u) => newurl = u,
                        Err(e) => self.comment_fmt(format_args!("httpsurlmod ignored: {e}")),
                    }
                }
            }
        }
        self.line("");
        if !self.missing.is_empty() {
            let m = self.missing.join(", ");
            self.notify_fmt(format_args!("missing query args: {m}"));
        }
        self.line_fmt(format_args!(
            "config add UP1 /url {}",
            rawurlencode(&newurl)
        ));
        self.line("config add UP1 /no-dhcp");
        self.line("config write");
        self.line("config activate");
        self.state.nextphase = self.nextphase.clone();
        self.state.phase = self.phase.clone();
        true
    }
}

/// Whether an `<applies>` condition holds for a device.
/// What the engine looks up on every poll, derived once per configuration
/// ([`SiteConfig::engine_index`]): the reference lowercases the model lists on every request.
#[derive(Debug, Default)]
pub struct EngineIndex {
    /// Class ids by lowercased model name, each in `classes` order, once.
    model_classes: std::collections::HashMap<String, Vec<String>>,
    /// `nofirmdev` and `nobootdev` lowercased, and joined by ", " as the script's comments
    /// show them.
    nofirm: Vec<String>,
    noboot: Vec<String>,
    nofirm_joined: String,
    noboot_joined: String,
    /// The phases in order, with the fake staging phase.
    phases: PhaseOrder,
}

impl EngineIndex {
    fn of(cfg: &SiteConfig) -> EngineIndex {
        let mut model_classes: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for c in &cfg.classes {
            for m in &c.models {
                let ids = model_classes.entry(m.to_lowercase()).or_default();
                if !ids.contains(&c.id) {
                    ids.push(c.id.clone());
                }
            }
        }
        let lower = |list: &[String]| list.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
        let (nofirm, noboot) = (lower(&cfg.nofirmdev), lower(&cfg.nobootdev));
        EngineIndex {
            model_classes,
            nofirm_joined: nofirm.join(", "),
            noboot_joined: noboot.join(", "),
            nofirm,
            noboot,
            phases: PhaseOrder::of(cfg),
        }
    }
}

fn applies(a: &Applies, classes: &[String], envs: &[String]) -> bool {
    let v = a.value.trim();
    v == "*"
        || if a.env {
            envs.iter().any(|e| e == v)
        } else {
            classes.iter().any(|c| c == v)
        }
}

/// `https?(://[^:/]+)(:\d+)?(.*)` → `https$1[:port]$3`.
fn switch_to_https(url: &str, port: &str) -> String {
    let re = regex::Regex::new(r"(?i)https?(://[^:/]+)(:[\d]+)?(.*)").expect("static regex");
    match re.captures(url) {
        Some(c) => format!(
            "https{}{}{}",
            &c[1],
            if port.is_empty() {
                String::new()
            } else {
                format!(":{port}")
            },
            c.get(3).map(|m| m.as_str()).unwrap_or("")
        ),
        None => url.to_string(),
    }
}

/// The snippet candidates of one request: [`candidate_scripts`], from a process-wide memo of
/// the device-independent names and their shape (every request of a class of devices in a
/// phase asks the same names but for the device's own), without building each name.
enum Candidates {
    /// From the memo; `device` fills the per-device slots.
    Shaped {
        shape: std::sync::Arc<[Candidate]>,
        device: String,
    },
    /// Built in full (the device's part could collide with another, see [`Candidates::new`]).
    Listed(Vec<String>),
}

/// One name of a [`Candidates::Shaped`] list.
enum Candidate {
    Fixed(Box<str>),
    /// `<head><device>.txt`.
    Device(Box<str>),
}

/// Shapes by their inputs; emptied when it reaches [`SHAPES_MAX`] entries.
static SHAPES: std::sync::LazyLock<
    std::sync::Mutex<foldhash::HashMap<String, std::sync::Arc<[Candidate]>>>,
> = std::sync::LazyLock::new(Default::default);
const SHAPES_MAX: usize = 4096;

impl Candidates {
    fn new(
        view: &SiteView,
        scriptdir: &str,
        phase: &str,
        classes: &[String],
        envs: &[String],
        devicescript: &str,
    ) -> Candidates {
        // A placeholder may stand for the device's part when no name built with one can
        // equal a name built with the other: the part holds neither the separator (a
        // serial's `-` became `_`) nor the placeholder, and no other environment part is it,
        // ends in it after a separator, or holds the placeholder (see [`SLOT`]).
        let distinct = !devicescript.contains(['-', SLOT])
            && devicescript != "all"
            && envs.iter().all(|e| {
                let e = e.to_lowercase();
                e != devicescript && !e.contains(['-', SLOT])
            });
        if !distinct {
            return Candidates::Listed(candidate_scripts(
                view,
                scriptdir,
                phase,
                classes,
                envs,
                devicescript,
            ));
        }
        // Everything `candidate_scripts` reads but the device, NUL-separated (no part holds
        // a NUL: they come from the URL and the configuration, where NUL is refused or
        // turned into U+FFFD; a collision would need one).
        let mut key = String::with_capacity(128);
        for part in [
            scriptdir,
            phase,
            view.fakelastphase.unwrap_or("\u{1}"),
            view.lastphase.unwrap_or("\u{1}"),
        ] {
            key.push_str(part);
            key.push('\0');
        }
        key.push(if view.phases.len() > 1 { '1' } else { '0' });
        key.push(if view.cfg.classes.len() > 1 { '1' } else { '0' });
        key.push(if view.cfg.environments.len() > 1 {
            '1'
        } else {
            '0'
        });
        for c in classes {
            key.push('\0');
            key.push_str(c);
        }
        key.push('\u{2}');
        for e in envs {
            key.push('\0');
            key.push_str(e);
        }
        let mut shapes = SHAPES.lock().unwrap_or_else(|p| p.into_inner());
        let shape = match shapes.get(&key) {
            Some(shape) => shape.clone(),
            None => {
                let made = shape(view, scriptdir, phase, classes, envs);
                if shapes.len() >= SHAPES_MAX {
                    shapes.clear();
                }
                shapes.insert(key, made.clone());
                made
            }
        };
        drop(shapes);
        Candidates::Shaped {
            shape,
            device: devicescript.to_string(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Candidates::Shaped { shape, .. } => shape.len(),
            Candidates::Listed(names) => names.len(),
        }
    }

    /// Append candidate `i` to `out`.
    fn write(&self, i: usize, out: &mut String) {
        match self {
            Candidates::Shaped { shape, device } => match &shape[i] {
                Candidate::Fixed(name) => out.push_str(name),
                Candidate::Device(head) => {
                    out.push_str(head);
                    out.push_str(device);
                    out.push_str(".txt");
                }
            },
            Candidates::Listed(names) => out.push_str(&names[i]),
        }
    }
}

/// The device's part in a [`shape`].
const SLOT: char = '\u{1}';

/// The [`candidate_scripts`] of a device whose own part cannot collide with the others (see
/// [`Candidates::new`]): [`SLOT`] stands for it and marks the per-device names.
fn shape(
    view: &SiteView,
    scriptdir: &str,
    phase: &str,
    classes: &[String],
    envs: &[String],
) -> std::sync::Arc<[Candidate]> {
    let slot = SLOT.to_string();
    let tail = format!("{SLOT}.txt");
    candidate_scripts(view, scriptdir, phase, classes, envs, &slot)
        .into_iter()
        .map(|name| match name.strip_suffix(tail.as_str()) {
            Some(head) => Candidate::Device(head.into()),
            None => Candidate::Fixed(name.into()),
        })
        .collect()
}

/// The snippet files that could apply, in delivery order (`getPossibleScripts`).
pub fn candidate_scripts(
    view: &SiteView,
    scriptdir: &str,
    phase: &str,
    classes: &[String],
    envs: &[String],
    devicescript: &str,
) -> Vec<String> {
    let phase = if view.fakelastphase == Some(phase) {
        view.lastphase.unwrap_or_default().to_string()
    } else {
        phase.to_string()
    };
    let mut allphases = vec![phase.to_lowercase()];
    if view.phases.len() > 1 {
        allphases.insert(0, "all".into());
    }
    let mut allclasses: Vec<String> = classes.iter().map(|c| c.to_lowercase()).collect();
    if view.cfg.classes.len() > 1 {
        allclasses.insert(0, "all".into());
    }
    let mut allenvs: Vec<String> = envs.iter().map(|e| e.to_lowercase()).collect();
    allenvs.insert(0, devicescript.to_lowercase());
    if view.cfg.environments.len() > 1 {
        allenvs.insert(0, "all".into());
    }
    // Names are unique when every part list is and no part contains the separator; only
    // otherwise can two combinations spell the same name (the reference lists it once).
    let parts_unique = [&allphases, &allclasses, &allenvs].iter().all(|list| {
        list.iter()
            .enumerate()
            .all(|(i, x)| !x.contains('-') && !list[..i].contains(x))
    });
    let mut out: Vec<String> =
        Vec::with_capacity(allphases.len() * allclasses.len() * allenvs.len());
    for p in &allphases {
        for c in &allclasses {
            for e in &allenvs {
                let mut f =
                    String::with_capacity(scriptdir.len() + p.len() + c.len() + e.len() + 8);
                for part in [scriptdir, "/", p, "-", c, "-", e, ".txt"] {
                    f.push_str(part);
                }
                if parts_unique || !out.contains(&f) {
                    out.push(f);
                }
            }
        }
    }
    out
}

/// The CHECK serial: md5 over the pre-snippet, every trimmed non-empty script line, and the
/// post-snippet, as bytes on the wire (see [`wire_bytes`]).
pub fn files_signature(pre: &[String], files: &[(String, ScriptFile)], post: &[String]) -> String {
    // ASCII text is its own wire bytes: fed as it is, without a copy per line.
    fn feed(h: &mut Md5, s: &str) {
        if s.is_ascii() {
            h.update(s.as_bytes());
        } else {
            h.update(wire_bytes(s));
        }
    }
    let mut h = Md5::new();
    for p in pre {
        feed(&mut h, p);
    }
    for (_, f) in files {
        if let Ok(text) = &f.content {
            for line in text.split('\n') {
                let l = line
                    .trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\0' | '\x0B'));
                if !l.is_empty() {
                    feed(&mut h, l);
                }
            }
        }
    }
    for p in post {
        feed(&mut h, p);
    }
    let mut out = String::with_capacity(32);
    for b in h.finalize() {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// A serial is used in file names and as the state key: letters, digits, `-`, `_`, `.`, `:`,
/// at most 64 characters, no `..`.
pub fn check_serial(sn: &str) -> Result<(), String> {
    if sn.is_empty() {
        return Err("empty (the update URL must carry sn=#m)".into());
    }
    if sn.len() > 64 {
        return Err("longer than 64 characters".into());
    }
    if sn.contains("..")
        || !sn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err("only letters, digits, '-', '_', '.' and ':' are allowed (expected e.g. 00-90-33-30-00-af)".into());
    }
    Ok(())
}

/// A device type becomes part of snippet and firmware file names.
pub fn check_type(t: &str) -> Result<(), String> {
    if t.is_empty()
        || t.len() > 64
        || t.contains("..")
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
    {
        return Err(
            "expected a model name such as IP232 (letters, digits, '-', '_', '.', '+')".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived model index answers `classes_of` as the reference's loop over every class
    /// and model does; a changed copy of a configuration derives its own.
    #[test]
    fn classes_from_the_index_are_the_reference_loop() {
        let mut cfg = SiteConfig::default();
        let class = |id: &str, models: &[&str]| crate::config::Class {
            id: id.into(),
            models: models.iter().map(|m| m.to_string()).collect(),
        };
        cfg.classes = vec![
            class("A", &["IP232", "ip232", "X1"]),
            class("b", &["ip232"]),
            class("A", &["x1"]),
            class("umlaut", &["ÄB"]),
            class("ip232", &["IP232"]),
        ];
        let reference = |cfg: &SiteConfig, device_type: &str| {
            let t = device_type.to_lowercase();
            let mut out: Vec<String> = Vec::new();
            for c in &cfg.classes {
                if c.models.iter().any(|m| m.to_lowercase() == t) && !out.contains(&c.id) {
                    out.push(c.id.clone());
                }
            }
            if !out.contains(&t) {
                out.push(t);
            }
            out
        };
        let types = ["IP232", "ip232", "x1", "X1", "äb", "ÄB", "none", ""];
        let view = SiteView::new(&cfg, "http://h");
        for t in types {
            assert_eq!(view.classes_of(t), reference(&cfg, t), "{t}");
        }
        assert_eq!(view.classes_of("Ip232"), ["A", "b", "ip232"]);
        let mut changed = cfg.clone();
        changed.classes.truncate(1);
        let view = SiteView::new(&changed, "http://h");
        for t in types {
            assert_eq!(view.classes_of(t), reference(&changed, t), "{t}");
        }
    }

    /// The reference's `getPossibleScripts`, written plainly: every combination, lower case,
    /// the first of equal names kept.
    fn naive(
        view: &SiteView,
        dir: &str,
        phase: &str,
        c: &[String],
        e: &[String],
        d: &str,
    ) -> Vec<String> {
        let mut ps = vec![phase.to_string()];
        if view.phases.len() > 1 {
            ps.insert(0, "all".into());
        }
        let mut cs = c.to_vec();
        if view.cfg.classes.len() > 1 {
            cs.insert(0, "all".into());
        }
        let mut es = e.to_vec();
        es.insert(0, d.to_string());
        if view.cfg.environments.len() > 1 {
            es.insert(0, "all".into());
        }
        let mut out: Vec<String> = Vec::new();
        for p in &ps {
            for c in &cs {
                for e in &es {
                    let f = format!(
                        "{dir}/{}-{}-{}.txt",
                        p.to_lowercase(),
                        c.to_lowercase(),
                        e.to_lowercase()
                    );
                    if !out.contains(&f) {
                        out.push(f);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn files_signature_is_md5_of_the_wire_bytes() {
        let file = |t: &str| {
            (
                "f".to_string(),
                ScriptFile {
                    mtime: 1,
                    content: Ok(t.into()),
                },
            )
        };
        let files = [
            file("  config add A /b 1 \r\n\n\tmod cmd X é\r\n"),
            file("ü€ line\n \x0B\0\n"),
        ];
        let pre = ["pre é".to_string(), "ascii".to_string()];
        let post = ["€".to_string()];
        // the bytes, spelled out: trimmed non-empty lines; é and ü as one byte each
        // (ISO-8859-1), € (beyond it) as UTF-8
        let mut bytes: Vec<u8> = b"pre \xE9ascii".to_vec();
        bytes.extend_from_slice(b"config add A /b 1mod cmd X \xE9");
        bytes.extend_from_slice(b"\xFC\xE2\x82\xAC line");
        bytes.extend_from_slice("€".as_bytes());
        let want = format!("{:x}", Md5::digest(&bytes));
        assert_eq!(files_signature(&pre, &files, &post), want);
        assert_eq!(
            files_signature(&[], &[], &[]),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }

    #[test]
    fn memoised_candidates_are_the_reference_list() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let two_envs = SiteConfig {
            environments: [
                SiteConfig::default().environments,
                SiteConfig::default().environments,
            ]
            .concat(),
            ..SiteConfig::default()
        };
        let configs = [SiteConfig::default(), two_envs];
        let cases = [
            (
                s(&["phone", "pre_opus_phone", "IP232"]),
                s(&["hq", "default"]),
            ),
            (s(&["phone", "all", "Phone"]), s(&["default", "all"])),
            (s(&["a-b", "a"]), s(&["c", "b-c"])),
            (s(&["x-y", "x"]), s(&["y-00_90_33"])),
            (s(&["phone"]), s(&["00_90_33"])),
            (s(&["phone"]), s(&["x-00_90_33", "\u{1}"])),
            (s(&[]), s(&[])),
        ];
        for cfg in &configs {
            let view = SiteView::new(cfg, "http://x");
            for (classes, envs) in &cases {
                for phase in ["update", "Staging", "all"] {
                    for device in ["00_90_33", "all", "x", "a\u{1}"] {
                        // twice: built, then from the memo
                        for _ in 0..2 {
                            let c = Candidates::new(&view, "scripts", phase, classes, envs, device);
                            let got: Vec<String> = (0..c.len())
                                .map(|i| {
                                    let mut f = String::new();
                                    c.write(i, &mut f);
                                    f
                                })
                                .collect();
                            let want =
                                candidate_scripts(&view, "scripts", phase, classes, envs, device);
                            assert_eq!(got, want, "{classes:?} {envs:?} {phase} {device}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn candidate_scripts_are_the_reference_list() {
        let cfg = SiteConfig::default();
        let view = SiteView::new(&cfg, "http://x");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases = [
            (
                s(&["phone", "pre_opus_phone", "IP232"]),
                s(&["hq", "default"]),
            ),
            // repeated parts and parts with the separator may spell one name twice
            (s(&["phone", "all", "Phone"]), s(&["default", "all"])),
            (s(&["a-b", "a"]), s(&["c", "b-c"])),
            (s(&[]), s(&[])),
        ];
        for (classes, envs) in cases {
            for phase in ["update", "Staging", "all"] {
                let got = candidate_scripts(&view, "scripts", phase, &classes, &envs, "00_90_33");
                let want = naive(&view, "scripts", phase, &classes, &envs, "00_90_33");
                assert_eq!(got, want, "{classes:?} {envs:?} {phase}");
            }
        }
    }
}
