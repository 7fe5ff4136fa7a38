//! The `autoprov` command: serve a site, check it, import an innovaphone PHP installation,
//! simulate a device.
//!
//! Only this binary uses `anyhow`; the libraries return typed errors. Exit codes: 0 success,
//! 1 failure (a message on stderr says what to do), 2 usage error (from clap).

mod demo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use autoprov_core::innovaphone::{plan_update, UpdateRequest};
use autoprov_core::site::{Site, CONFIG_FILE};

#[derive(Parser)]
#[command(
    name = "autoprov",
    version,
    about = "Provisioning server for IP phones and gateways"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve a site over HTTP. Creates a demo site first when the directory does not exist.
    Serve(ServeArgs),
    /// Validate a site's autoprov.toml; errors name file, line and column.
    Check {
        /// Site directory (holds autoprov.toml).
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
    },
    /// Import an innovaphone PHP update server installation (config.xml,
    /// config/user-config.xml, scripts/) into a new site directory.
    ImportInnovaphone {
        /// The PHP update server's directory (the one holding update.php and config/).
        php_dir: PathBuf,
        /// The site directory to create.
        site_dir: PathBuf,
    },
    /// Print exactly what a device would receive now, without recording any state.
    Simulate(Box<SimulateArgs>),
    /// List the devices in the site's database (missing ones flagged).
    Devices {
        /// Site directory (holds autoprov.toml).
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
        /// Print JSON (one array of device states) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Site directory (holds autoprov.toml).
    #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
    site: PathBuf,
    /// Address to listen on; repeat for several. Default: `[server] listen` of the site.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
}

#[derive(Args)]
struct SimulateArgs {
    /// Site directory (holds autoprov.toml).
    #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
    site: PathBuf,
    /// Device type as sent in `type=` (#t), e.g. IP232.
    #[arg(long = "type")]
    device_type: String,
    /// Serial as sent in `sn=` (#m), e.g. 00-90-33-30-00-af.
    #[arg(long)]
    sn: String,
    /// Hardware id as sent in `hwid=` (#h); default `<TYPE>-<last 3 bytes of sn>`.
    #[arg(long)]
    hwid: Option<String>,
    /// The device's own address (#i).
    #[arg(long, default_value = "192.0.2.10")]
    ip: String,
    /// Comma-separated environments (`env=`).
    #[arg(long)]
    env: Option<String>,
    /// Phase the device's URL carries (`phase=`).
    #[arg(long)]
    phase: Option<String>,
    /// Polling value the device's URL carries (`polling=`).
    #[arg(long)]
    polling: Option<String>,
    /// Firmware build the device runs (`PROT=`).
    #[arg(long)]
    prot: Option<String>,
    /// Boot code build the device runs (`BOOT=`).
    #[arg(long)]
    boot: Option<String>,
    /// CHECK serial the device stored (`CHECK=`).
    #[arg(long)]
    check: Option<String>,
    /// Host the device uses to reach the server (appears in URLs).
    #[arg(long, default_value = "autoprov.example:8080")]
    host: String,
    /// Path of the update script as the device calls it.
    #[arg(long, default_value = "/update.php")]
    path: String,
    /// Pretend the request came over HTTPS on this port.
    #[arg(long)]
    https_port: Option<u16>,
    /// Print only the explanations, not the script.
    #[arg(long)]
    explain: bool,
}

fn main() {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.cmd {
        Cmd::Serve(a) => runtime().and_then(|rt| rt.block_on(serve(a))),
        Cmd::Check { site } => check(&site),
        Cmd::ImportInnovaphone { php_dir, site_dir } => import(&php_dir, &site_dir),
        Cmd::Simulate(a) => runtime().and_then(|rt| rt.block_on(simulate(*a))),
        Cmd::Devices { site, json } => runtime().and_then(|rt| rt.block_on(devices(&site, json))),
    };
    if let Err(e) = result {
        eprintln!("autoprov: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTOPROV_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,tower_http=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load_site(dir: &Path) -> Result<Site> {
    Site::load(dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(run `autoprov check --site {}` for details)",
            dir.display()
        )
    })
}

async fn open_store(site: &Site) -> Result<autoprov_store::Store> {
    let db = site
        .path(&site.config.server.database)
        .context("[server] database must be a relative path inside the site")?;
    autoprov_store::Store::open(&db)
        .await
        .with_context(|| format!("cannot open the device database {}", db.display()))
}

async fn serve(a: ServeArgs) -> Result<()> {
    if !a.site.join(CONFIG_FILE).exists() {
        if a.site.exists() && std::fs::read_dir(&a.site)?.next().is_some() {
            bail!(
                "{} exists but has no {CONFIG_FILE}; point --site at a site directory or at a new one",
                a.site.display()
            );
        }
        demo::create(&a.site)?;
        eprintln!("autoprov: created demo site in {}", a.site.display());
    }
    let site = load_site(&a.site)?;
    let listen: Vec<SocketAddr> = if a.listen.is_empty() {
        site.config
            .server
            .listen
            .iter()
            .map(|s| {
                s.parse()
                    .with_context(|| format!("[server] listen: '{s}' is not ADDR:PORT"))
            })
            .collect::<Result<_>>()?
    } else {
        a.listen.clone()
    };
    let store = open_store(&site).await?;
    let state = autoprov_server::AppState::new(site, store);
    let bound = autoprov_server::bind(&listen).await?;
    for addr in bound.local_addrs() {
        let host = if addr.ip().is_unspecified() {
            local_ip().unwrap_or_else(|| "127.0.0.1".parse().expect("literal"))
        } else {
            addr.ip()
        };
        let host = SocketAddr::new(host, addr.port());
        println!("autoprov: listening on {addr}");
        println!("autoprov: innovaphone devices: set the update URL to http://{host}/update.php?type=#t&sn=#m&hwid=#h&ip=#i");
    }
    bound.run(state, shutdown_signal()).await?;
    Ok(())
}

/// The address this host would use towards other hosts (no packet is sent).
fn local_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    s.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    eprintln!("autoprov: shutting down");
}

fn check(dir: &Path) -> Result<()> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (config, diags) =
        autoprov_core::validate::validate_text(&path.display().to_string(), &text);
    for d in &diags {
        println!("{d}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    if let Some(config) = config {
        let scripts = autoprov_core::site::safe_join(dir, &config.times.dir);
        match scripts {
            Some(s) if !s.is_dir() => {
                println!(
                    "{}: warning: snippet directory {} does not exist; devices will get no snippets",
                    path.display(),
                    s.display()
                );
            }
            _ => {}
        }
    }
    if errors > 0 {
        bail!("{} has {errors} error(s)", path.display());
    }
    println!("{}: ok", path.display());
    Ok(())
}

fn import(php_dir: &Path, site_dir: &Path) -> Result<()> {
    let report = autoprov_core::import::import_innovaphone(php_dir, site_dir)?;
    for src in &report.sources {
        println!("read    {}", src.display());
    }
    for c in &report.copied {
        println!(
            "copied  {} -> {} ({} files)",
            c.from.display(),
            c.to.display(),
            c.files
        );
    }
    for w in &report.written {
        println!("wrote   {}", w.display());
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    println!(
        "autoprov: imported {} into {}",
        php_dir.display(),
        site_dir.display()
    );
    Ok(())
}

async fn simulate(a: SimulateArgs) -> Result<()> {
    let site = load_site(&a.site)?;
    let mut args: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            args.push((k.to_string(), v.to_string()));
        }
    };
    push("polling", a.polling.as_deref());
    push("phase", a.phase.as_deref());
    push("type", Some(&a.device_type));
    push("sn", Some(&a.sn));
    let hwid = a
        .hwid
        .clone()
        .unwrap_or_else(|| default_hwid(&a.device_type, &a.sn));
    push("hwid", Some(&hwid));
    push("ip", Some(&a.ip));
    push("env", a.env.as_deref());
    push("PROT", a.prot.as_deref());
    push("BOOT", a.boot.as_deref());
    push("CHECK", a.check.as_deref());
    let req = UpdateRequest {
        args,
        https: a.https_port.is_some(),
        server_port: a.https_port,
        host: a.host.clone(),
        path: a.path.clone(),
        peer_ip: a.ip.clone(),
        forwarded_for: None,
        client_cert: None,
    };
    // Read the device's state when the site keeps one, but never write it back.
    let state = if site.config.status.enabled {
        match open_store(&site).await {
            Ok(store) => store.load(&a.sn).await.unwrap_or(None),
            Err(_) => None,
        }
    } else {
        None
    };
    let now = unix_now();
    let site = std::sync::Arc::new(site);
    let handle = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut ports = autoprov_server::SitePorts::standalone(site.clone(), handle);
        plan_update(&site, &req, state, now, &mut ports)
    })
    .await
    .context("simulation failed")?;
    if a.explain {
        for n in &outcome.notes {
            println!("{n}");
        }
    } else {
        use std::io::Write;
        std::io::stdout().write_all(outcome.body.as_bytes())?;
    }
    if let Some(e) = outcome.error {
        bail!("the device would get an error: {e}");
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn devices(dir: &Path, json: bool) -> Result<()> {
    let site = load_site(dir)?;
    let store = open_store(&site).await?;
    let list = store.list().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let now = unix_now();
    let missing_after = site.config.status.missing as i64;
    println!(
        "{:<20} {:<10} {:<14} {:<16} {:<12} {:<10} STATUS",
        "SN", "TYPE", "PHASE", "ENVIRONMENTS", "LAST SEEN", "FIRMWARE"
    );
    for d in &list {
        let missing = missing_after > 0 && d.seen < now - missing_after;
        println!(
            "{:<20} {:<10} {:<14} {:<16} {:<12} {:<10} {}",
            d.sn,
            d.device.device_type.as_deref().unwrap_or("-"),
            d.device.phase.as_deref().unwrap_or("-"),
            d.device.environments.as_deref().unwrap_or("-"),
            autoprov_core::innovaphone::php::since(now, d.seen),
            d.firmware.build.as_deref().unwrap_or("-"),
            if missing { "missing" } else { "present" }
        );
    }
    println!("{} device(s)", list.len());
    Ok(())
}

/// `IP232` + `00-90-33-30-00-af` → `IP232-30-00-af`, as innovaphone devices form `#h`.
fn default_hwid(device_type: &str, sn: &str) -> String {
    let parts: Vec<&str> = sn.split(['-', ':']).collect();
    if parts.len() >= 3 {
        format!("{device_type}-{}", parts[parts.len() - 3..].join("-"))
    } else {
        format!("{device_type}-{sn}")
    }
}
