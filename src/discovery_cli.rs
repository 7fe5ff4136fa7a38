//! `autoprov notify`, `autoprov dhcp-config`, and starting the zero-touch side channels (SIP
//! plug-and-play, mDNS, TFTP) for `serve`.
//!
//! Argument handling and printing only; the work is done by `autoprov_server::sip::notify`,
//! `autoprov_server::discovery` and `autoprov_core::dhcp`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use autoprov_core::dhcp::{self, DhcpFormat};
use autoprov_core::discovery::{Brand, NotifyAction};
use autoprov_core::Site;
use autoprov_server::discovery::{provisioning_url, Discovery};
use autoprov_server::sip::notify::{self, NotifyRequest, Outcome, Selection};

#[derive(Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).args(["device", "filter", "all", "to"])))]
pub struct NotifyArgs {
    /// Site directory (holds autoprov.toml).
    #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
    site: PathBuf,
    /// One device, by serial or MAC (any spelling); its last known IP is used unless --to.
    #[arg(long, conflicts_with_all = ["filter", "all"])]
    device: Option<String>,
    /// Devices whose record contains every word (serial, IP, brand, type, phase, classes,
    /// environments; case-insensitive), e.g. "yealink 10.1.".
    #[arg(long, conflicts_with = "all")]
    filter: Option<String>,
    /// Every device in the inventory.
    #[arg(long)]
    all: bool,
    /// Send to this address (IP or IP:PORT) instead of the device's last known IP.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["filter", "all"])]
    to: Option<String>,
    /// Brand to assume where the inventory does not tell (snom, yealink, grandstream, fanvil,
    /// gigaset, digium, polycom, cisco, panasonic).
    #[arg(long)]
    brand: Option<String>,
    /// check-sync: re-read the configuration (without a reboot where the brand can tell);
    /// reboot: re-read and reboot.
    #[arg(long, value_enum, default_value_t = EventArg::CheckSync)]
    event: EventArg,
    /// NOTIFYs started per second (default: sip.notify_rate of the site).
    #[arg(long)]
    rate: Option<u32>,
}

#[derive(Clone, Copy, ValueEnum)]
enum EventArg {
    CheckSync,
    Reboot,
}

#[derive(Args)]
pub struct DhcpArgs {
    /// Site directory (holds autoprov.toml).
    #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
    site: PathBuf,
    /// Syntax of the DHCP server.
    #[arg(long, value_enum)]
    format: FormatArg,
    /// Provisioning URL to hand out (default: [provisioning] base_url, else this host's address
    /// and the port of the first [server] listen address).
    #[arg(long)]
    url: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Dnsmasq,
    Isc,
    Kea,
}

pub async fn notify(a: NotifyArgs, load_site: impl Fn(&Path) -> Result<Site>) -> Result<()> {
    let site = load_site(&a.site)?;
    let store = crate::open_store(&site).await?;
    let brand = match &a.brand {
        Some(b) => Some(Brand::from_id(b).with_context(|| {
            let ids: Vec<&str> = Brand::ALL.iter().map(|b| b.id()).collect();
            format!("unknown brand '{b}'; use one of {}", ids.join(", "))
        })?),
        None => None,
    };
    let selection = match (&a.device, &a.filter, a.all) {
        (Some(d), _, _) => Selection::Device(d.clone()),
        (_, Some(f), _) => Selection::Filter(f.clone()),
        (_, _, true) => Selection::All,
        _ => Selection::None,
    };
    let req = NotifyRequest {
        selection,
        to: a.to.clone(),
        brand,
        action: match a.event {
            EventArg::CheckSync => NotifyAction::CheckSync,
            EventArg::Reboot => NotifyAction::Reboot,
        },
        rate: a.rate,
    };
    let started = std::time::Instant::now();
    let reports = notify::run(&site, &store, None, &req, |r| {
        println!(
            "{:<20} {:<22} {:<24} {}",
            r.sn.as_deref().unwrap_or("-"),
            r.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            r.event.as_deref().unwrap_or("-"),
            r.outcome
        );
    })
    .await?;
    let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
    let accepted = count(|o| matches!(o, Outcome::Accepted { .. }));
    let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
    let bad = reports.len() - accepted - skipped;
    println!(
        "autoprov: {} NOTIFY target(s) in {:.1} s: {accepted} accepted, {bad} not accepted, {skipped} skipped",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    if reports.is_empty() {
        bail!("no device matched; list them with `autoprov devices`");
    }
    if bad > 0 {
        bail!("{bad} phone(s) did not accept the NOTIFY (see above)");
    }
    Ok(())
}

pub fn dhcp_config(a: DhcpArgs, load_site: impl Fn(&Path) -> Result<Site>) -> Result<()> {
    let url = match a.url {
        Some(u) => u,
        None => {
            let site = load_site(&a.site)?;
            let http: Vec<SocketAddr> = site
                .config
                .server
                .listen
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            provisioning_url(&site, &http)
        }
    };
    let format = match a.format {
        FormatArg::Dnsmasq => DhcpFormat::Dnsmasq,
        FormatArg::Isc => DhcpFormat::Isc,
        FormatArg::Kea => DhcpFormat::Kea,
    };
    let text = dhcp::render(format, &url).map_err(anyhow::Error::msg)?;
    print!("{text}");
    Ok(())
}

/// Start SIP plug-and-play, mDNS and TFTP as the site enables them, and print what runs.
pub async fn start_side_channels(
    state: &autoprov_server::AppState,
    listeners: &[(SocketAddr, autoprov_server::ListenerKind)],
) -> Result<Discovery> {
    let http: Vec<SocketAddr> = listeners
        .iter()
        .filter(|(_, k)| *k == autoprov_server::ListenerKind::Http)
        .map(|(a, _)| *a)
        .collect();
    let d = autoprov_server::discovery::start(state, &http).await?;
    for line in &d.lines {
        println!("autoprov: {line}");
    }
    Ok(d)
}
