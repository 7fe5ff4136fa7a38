//! `autoprov firmware add|status`: manage the firmware catalogue of a site and see where the
//! devices stand; and the catalogue part of `autoprov check`.
//!
//! The work is done by `autoprov_server::catalog`; this module parses arguments and prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use autoprov_core::firmware::{AddPlan, ProgressState};
use autoprov_server::catalog::{self, AddRequest, Firmware};

#[derive(Subcommand)]
pub enum FirmwareCmd {
    /// Copy a firmware file into the site's catalogue (atomically) and record its size and
    /// sha256 in <firmware.dir>/catalog.toml.
    Add(AddArgs),
    /// List the firmware targets, the catalogue's images and the devices (done, pending,
    /// flagged).
    Status {
        /// Site directory (holds autoprov.toml).
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Read every stored image and check its sha256 (slow for large catalogues).
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Args)]
pub struct AddArgs {
    /// Site directory (holds autoprov.toml).
    #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
    site: PathBuf,
    /// Vendor id, e.g. snom, yealink, gigaset.
    #[arg(long)]
    vendor: String,
    /// Model as the vendor module reports it, e.g. D785.
    #[arg(long)]
    model: String,
    /// The firmware version the file contains (what the phone reports once it runs it).
    #[arg(long = "version")]
    version: String,
    /// Name of the file in the catalogue and its URL (default: FILE's own name).
    #[arg(long)]
    name: Option<String>,
    /// The firmware file.
    file: PathBuf,
}

pub fn run(cmd: FirmwareCmd) -> Result<()> {
    match cmd {
        FirmwareCmd::Add(a) => add(&a),
        FirmwareCmd::Status { site, json, verify } => {
            super::runtime()?.block_on(status(&site, json, verify))
        }
    }
}

fn add(a: &AddArgs) -> Result<()> {
    let site = super::load_site(&a.site)?;
    let req = AddRequest {
        vendor: &a.vendor,
        model: &a.model,
        version: &a.version,
        source: &a.file,
        name: a.name.as_deref(),
    };
    let added = catalog::add_file(&site, &req, super::unix_now())
        .with_context(|| format!("cannot add {} to the catalogue", a.file.display()))?;
    let entry = match &added.plan {
        AddPlan::Store(e) => {
            println!(
                "added   {} {} {}: {} bytes, sha256 {}",
                e.vendor, e.model, e.version, e.size, e.sha256
            );
            println!("stored  {}", added.path.display());
            println!("url     {}", e.url_path());
            e
        }
        AddPlan::Alias { entry, canonical } => {
            println!(
                "added   {} {} {} as an alias: same bytes as {} {} {} (sha256 {})",
                entry.vendor,
                entry.model,
                entry.version,
                canonical.vendor,
                canonical.model,
                canonical.version,
                entry.sha256
            );
            println!("url     {} (one URL for one content)", canonical.url_path());
            entry
        }
        AddPlan::AlreadyPresent(e) => {
            println!(
                "{} {} {} is already in the catalogue with these bytes; nothing changed",
                e.vendor, e.model, e.version
            );
            e
        }
    };
    let has_rule = site.config.firmware.targets.iter().any(|r| {
        r.vendor.eq_ignore_ascii_case(&entry.vendor) && r.model.eq_ignore_ascii_case(&entry.model)
    });
    if !has_rule {
        println!(
            "hint    no target for {} {} yet; to roll it out add to autoprov.toml and restart:\n\
             \n[[firmware.targets]]\nvendor = \"{}\"\nmodel = \"{}\"\nversion = \"{}\"",
            entry.vendor, entry.model, entry.vendor, entry.model, entry.version
        );
    }
    Ok(())
}

async fn status(dir: &Path, json: bool, verify: bool) -> Result<()> {
    let site = super::load_site(dir)?;
    let fw = Firmware::load(&site)?;
    let store = super::open_store(&site).await?;
    let report = fw.status(&store, verify).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("TARGETS");
    println!(
        "{:<10} {:<12} {:<14} {:<14} {:<14} URL",
        "VENDOR", "MODEL", "VERSION", "GROUPS", "IMAGE"
    );
    for t in &report.targets {
        let r = &t.rule;
        println!(
            "{:<10} {:<12} {:<14} {:<14} {:<14} {}",
            r.vendor,
            r.model,
            r.version,
            if r.groups.is_empty() {
                "*".to_string()
            } else {
                r.groups.join(",")
            },
            t.file.map_or("not in catalogue", |f| f.as_str()),
            t.url_path.as_deref().unwrap_or("-")
        );
    }
    println!("\nIMAGES");
    println!(
        "{:<10} {:<12} {:<14} {:>12} {:<16} {:<14} URL",
        "VENDOR", "MODEL", "VERSION", "SIZE", "SHA256", "FILE"
    );
    for i in &report.images {
        let m = &i.image;
        println!(
            "{:<10} {:<12} {:<14} {:>12} {:<16} {:<14} {}",
            m.vendor,
            m.model,
            m.version,
            m.size,
            &m.sha256[..m.sha256.len().min(16)],
            i.file.as_str(),
            i.url_path
        );
    }
    println!("\nDEVICES");
    println!(
        "{:<20} {:<10} {:<12} {:<14} {:<14} {:>7} {:<12} STATE",
        "DEVICE", "VENDOR", "MODEL", "REPORTED", "TARGET", "FETCHES", "LAST FETCH"
    );
    let now = super::unix_now();
    let mut counts = [0usize; 4];
    for d in &report.devices {
        let p = &d.progress;
        counts[match d.state {
            ProgressState::Done => 0,
            ProgressState::Pending => 1,
            ProgressState::Flagged => 2,
            ProgressState::NoTarget => 3,
        }] += 1;
        println!(
            "{:<20} {:<10} {:<12} {:<14} {:<14} {:>7} {:<12} {}",
            p.device,
            dash(&p.vendor),
            dash(&p.model),
            p.reported_version.as_deref().unwrap_or("-"),
            d.target_version.as_deref().unwrap_or("-"),
            p.fetches,
            p.last_fetch_at
                .map(|t| autoprov_core::innovaphone::php::since(now, t))
                .unwrap_or_else(|| "-".into()),
            d.state
        );
    }
    println!(
        "{} device(s): {} done, {} pending, {} flagged, {} without target",
        report.devices.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    Ok(())
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}
