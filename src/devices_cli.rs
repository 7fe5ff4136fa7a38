//! `autoprov devices list|show|forget`, `autoprov backups list|get|diff` and
//! `autoprov admin passwd|token`: the device inventory from the command line, over the same
//! service layer as the web UI and the REST API (`autoprov_server::admin::service`); `devices
//! list` builds an inventory index (`autoprov_core::inventory`) from the stored devices and
//! queries it, as the server does with its long-lived one.
//! `autoprov devices --site DIR [--json]` (no subcommand) is `devices list`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;

use autoprov_core::Site;
use autoprov_server::admin::{auth, service};

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// List devices (the default): filter with seed 003 semantics (whole words,
    /// case-insensitive, all terms must match, `present`/`missing`).
    List {
        /// Filter terms, e.g. `172.16. ip222`.
        filter: Vec<String>,
        /// Sort column (sn, vendor, model, name, ip, phase, firmware, seen, last_backup; `-` prefix = descending).
        #[arg(long, default_value = "sn")]
        sort: String,
        /// Rows to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// At most this many rows (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Show one device's stored state (JSON).
    Show { sn: String },
    /// Forget one device (its state; backups and certificate files stay).
    Forget { sn: String },
}

#[derive(Subcommand)]
pub enum BackupsCmd {
    /// A device's backups, oldest first.
    List {
        sn: String,
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
    },
    /// Print one backup.
    Get {
        sn: String,
        name: String,
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
    },
    /// Line diff of two backups.
    Diff {
        sn: String,
        old: String,
        new: String,
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Set an operator's password (from AUTOPROV_ADMIN_PASSWORD, else a random one is printed).
    Passwd {
        #[arg(long, default_value = "admin")]
        user: String,
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
    },
    /// Create an API token for scripts (printed once).
    Token {
        #[arg(long, default_value = "admin")]
        user: String,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
    },
}

type Loader = fn(&Path) -> Result<Site>;

async fn open(dir: &Path, load: Loader) -> Result<(Site, autoprov_store::Store)> {
    let site = load(dir)?;
    let store = crate::open_store(&site).await?;
    Ok((site, store))
}

fn now() -> i64 {
    autoprov_server::app::now()
}

pub async fn devices(dir: &Path, json: bool, cmd: Option<DevicesCmd>, load: Loader) -> Result<()> {
    let (site, store) = open(dir, load).await?;
    let cmd = cmd.unwrap_or(DevicesCmd::List {
        filter: Vec::new(),
        sort: "sn".into(),
        offset: 0,
        limit: 0,
    });
    match cmd {
        DevicesCmd::List {
            filter,
            sort,
            offset,
            limit,
        } => {
            let q = service::ListQuery {
                filter: filter.join(" "),
                sort,
                offset,
                limit,
            };
            let page = service::list_devices(&site, &store, &q, now()).await?;
            if json {
                // Full device states, as before the service layer existed, plus the query
                // `show` values as `show: [{title, value}]`.
                let mut states = Vec::new();
                for r in &page.devices {
                    if let Some(s) = store.load(&r.sn).await? {
                        states.push(with_show(s, &r.show)?);
                    }
                }
                println!("{}", serde_json::to_string_pretty(&states)?);
                return Ok(());
            }
            let t = now();
            // The query `show` columns (seed 003) after STATUS, each as wide as its widest cell.
            let widths: Vec<usize> = page
                .show_titles
                .iter()
                .enumerate()
                .map(|(i, title)| {
                    page.devices
                        .iter()
                        .filter_map(|d| d.show.get(i))
                        .map(|v| v.value.chars().count().max(1))
                        .chain([title.chars().count()])
                        .max()
                        .unwrap_or(1)
                })
                .collect();
            let mut header = format!(
                "{:<20} {:<10} {:<14} {:<16} {:<12} {:<10} {:<7}",
                "SN", "TYPE", "PHASE", "ENVIRONMENTS", "LAST SEEN", "FIRMWARE", "STATUS"
            );
            for (title, w) in page.show_titles.iter().zip(&widths) {
                header.push_str(&format!("  {:<w$}", title.to_uppercase(), w = *w));
            }
            println!("{}", header.trim_end());
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            for d in &page.devices {
                let mut line = format!(
                    "{:<20} {:<10} {:<14} {:<16} {:<12} {:<10} {:<7}",
                    d.sn,
                    dash(&d.model),
                    dash(&d.phase),
                    dash(&d.environments),
                    autoprov_core::innovaphone::php::since(t, d.seen),
                    dash(&d.firmware),
                    if d.missing { "missing" } else { "present" }
                );
                for (v, w) in d.show.iter().zip(&widths) {
                    line.push_str(&format!("  {:<w$}", dash(&v.value), w = *w));
                }
                println!("{}", line.trim_end());
            }
            println!("{} device(s)", page.total);
        }
        DevicesCmd::Show { sn } => {
            let d = service::show_device(&store, &sn).await?;
            let show = service::show_values(&site, &d);
            println!("{}", serde_json::to_string_pretty(&with_show(d, &show)?)?);
        }
        DevicesCmd::Forget { sn } => {
            service::forget_device(&store, &sn).await?;
            let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
            store
                .audit_add(now(), &format!("cli:{user}"), "forget-device", &sn, "")
                .await?;
            println!("forgot device {sn}");
        }
    }
    Ok(())
}

/// A device state as JSON with the query `show` values added as `show: [{title, value}]`
/// (only when the site defines show columns, so the output is unchanged otherwise).
fn with_show(
    d: autoprov_core::DeviceState,
    show: &[service::ShowValue],
) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(&d)?;
    if !show.is_empty() {
        if let Some(o) = v.as_object_mut() {
            o.insert("show".into(), serde_json::to_value(show)?);
        }
    }
    Ok(v)
}

pub async fn backups(cmd: BackupsCmd, load: Loader) -> Result<()> {
    match cmd {
        BackupsCmd::List { sn, site } => {
            let (site, store) = open(&site, load).await?;
            let d = service::show_device(&store, &sn).await?;
            for b in service::list_backups(&site, &d)? {
                println!(
                    "{:<32} {:>8} {}",
                    b.name,
                    b.size,
                    autoprov_server::rollout::format_time(b.modified)
                );
            }
        }
        BackupsCmd::Get { sn, name, site } => {
            let (site, store) = open(&site, load).await?;
            let d = service::show_device(&store, &sn).await?;
            let bytes = service::read_backup(&site, &d, &name)?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
        BackupsCmd::Diff { sn, old, new, site } => {
            let (site, store) = open(&site, load).await?;
            let d = service::show_device(&store, &sn).await?;
            for l in service::diff_backups(&site, &d, &old, &new)? {
                println!("{}{}", l.op, l.text);
            }
        }
    }
    Ok(())
}

pub async fn admin(cmd: AdminCmd, load: Loader) -> Result<()> {
    match cmd {
        AdminCmd::Passwd { user, site } => {
            let (_, store) = open(&site, load).await?;
            let (pw, shown) = match std::env::var(auth::PASSWORD_ENV) {
                Ok(p) if p.len() >= 8 => (p, false),
                Ok(_) => anyhow::bail!("the password must have at least 8 characters"),
                Err(_) => (auth::random_token()[..20].to_string(), true),
            };
            auth::set_password(&store, &user, &pw).await?;
            store
                .audit_add(now(), "cli", "set-password", &user, "")
                .await?;
            if shown {
                println!("password of {user}: {pw}");
            } else {
                println!("password of {user} set");
            }
        }
        AdminCmd::Token { user, label, site } => {
            let (_, store) = open(&site, load).await?;
            if store.user_get(&user).await?.is_none() {
                anyhow::bail!(
                    "no operator '{user}': run `autoprov admin passwd --user {user}` first"
                );
            }
            let t = auth::create_token(&store, &user, &label).await?;
            store
                .audit_add(now(), "cli", "create-token", &user, &label)
                .await?;
            println!("{t}");
        }
    }
    Ok(())
}
