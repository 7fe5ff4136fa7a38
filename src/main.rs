//! The `autoprov` command: serve a site, check it, import an innovaphone PHP installation,
//! simulate a device.
//!
//! Only this binary uses `anyhow`; the libraries return typed errors. Exit codes: 0 success,
//! 1 failure (a message on stderr says what to do), 2 usage error (from clap).

/// mimalloc instead of the system allocator: the request path allocates many small strings.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod demo;
mod devices_cli;
mod discovery_cli;
mod firmware_cli;
mod tls_cli;

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
    /// The device database, overriding `[server] database` of the site: an SQLite file path or
    /// a postgres://user:password@host:port/database URL (several replicas may share one).
    #[arg(
        long,
        global = true,
        env = "AUTOPROV_DATABASE",
        value_name = "FILE|URL"
    )]
    database: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--database` as given on the command line (set once in `main`).
static DATABASE_OVERRIDE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

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
    /// Manage the firmware catalogue (`add`) and see targets and device progress (`status`).
    Firmware {
        #[command(subcommand)]
        cmd: firmware_cli::FirmwareCmd,
    },
    /// The site's certificate authority: create it, approve (sign) a device's CSR.
    Ca {
        #[command(subcommand)]
        cmd: tls_cli::CaCmd,
    },
    /// The certificate roll-out by hand: pending CSRs, download one, upload the signed
    /// certificate.
    Certs {
        #[command(subcommand)]
        cmd: tls_cli::CertsCmd,
    },
    /// Send SIP NOTIFY check-sync (or reboot) to phones: one device, a filter, all, or an
    /// address; throttled to --rate per second; results recorded per device.
    Notify(discovery_cli::NotifyArgs),
    /// Print DHCP server options (66, 43, 114, 160; matched by option 60 or MAC prefix)
    /// pointing phones at this server.
    DhcpConfig(discovery_cli::DhcpArgs),
    /// The devices in the site's database: `list` (the default; missing ones flagged,
    /// filter as on the status page), `show`, `forget`.
    Devices {
        /// Site directory (holds autoprov.toml).
        #[arg(
            long,
            default_value = "demo-site",
            env = "AUTOPROV_SITE",
            global = true
        )]
        site: PathBuf,
        /// Print JSON (one array of device states) instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: Option<devices_cli::DevicesCmd>,
    },
    /// A device's configuration backups: list, get, diff.
    Backups {
        #[command(subcommand)]
        cmd: devices_cli::BackupsCmd,
    },
    /// Operators of the web UI and REST API: set a password, create an API token.
    Admin {
        #[command(subcommand)]
        cmd: devices_cli::AdminCmd,
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
    /// HTTPS address; repeat for several. Default: `[tls] https_listen` of the site.
    #[arg(long = "https", value_name = "ADDR:PORT")]
    https: Vec<SocketAddr>,
    /// Mutual-TLS address (client certificates asked for and verified); repeat for several.
    /// Default: `[tls] mtls_listen` of the site.
    #[arg(long = "mtls", value_name = "ADDR:PORT")]
    mtls: Vec<SocketAddr>,
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
    no_transparent_huge_pages();
    let cli = Cli::parse();
    init_logging();
    let _ = DATABASE_OVERRIDE.set(cli.database.clone());
    let result = match cli.cmd {
        Cmd::Serve(a) => runtime().and_then(|rt| rt.block_on(serve(a))),
        Cmd::Check { site } => check(&site),
        Cmd::ImportInnovaphone { php_dir, site_dir } => import(&php_dir, &site_dir),
        Cmd::Simulate(a) => runtime().and_then(|rt| rt.block_on(simulate(*a))),
        Cmd::Firmware { cmd } => firmware_cli::run(cmd),
        Cmd::Ca { cmd } => tls_cli::ca(cmd, load_site),
        Cmd::Certs { cmd } => tls_cli::certs(cmd, load_site),
        Cmd::Notify(a) => runtime().and_then(|rt| rt.block_on(discovery_cli::notify(a, load_site))),
        Cmd::DhcpConfig(a) => discovery_cli::dhcp_config(a, load_site),
        Cmd::Devices { site, json, cmd } => {
            runtime().and_then(|rt| rt.block_on(devices_cli::devices(&site, json, cmd, load_site)))
        }
        Cmd::Backups { cmd } => {
            runtime().and_then(|rt| rt.block_on(devices_cli::backups(cmd, load_site)))
        }
        Cmd::Admin { cmd } => {
            runtime().and_then(|rt| rt.block_on(devices_cli::admin(cmd, load_site)))
        }
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

/// Open the site's device database for a one-shot command (every save written at once).
pub(crate) async fn open_store(site: &Site) -> Result<autoprov_store::Store> {
    open_store_with(site, false).await
}

/// Open the site's device database: `--database` if given, else `[server] database` (a
/// postgres:// URL, or an SQLite file inside the site). Every command goes through here;
/// `serving` turns on the write-behind of `[server] state_batch_ms` (the server flushes it
/// when it stops; one-shot commands must not queue).
async fn open_store_with(site: &Site, serving: bool) -> Result<autoprov_store::Store> {
    let configured = DATABASE_OVERRIDE
        .get()
        .and_then(|o| o.clone())
        .unwrap_or_else(|| site.config.server.database.clone());
    let given = DATABASE_OVERRIDE.get().is_some_and(|o| o.is_some());
    // A URL, or a path given on the command line, is taken as it is.
    let location = if given || autoprov_store::is_postgres_url(&configured) {
        configured
    } else {
        site.path(&configured)
            .context(
                "[server] database must be a relative path inside the site or a postgres:// URL",
            )?
            .display()
            .to_string()
    };
    let batch = site.config.server.state_batch_ms;
    let options = autoprov_store::StoreOptions {
        write_behind: (serving && batch > 0).then(|| std::time::Duration::from_millis(batch)),
        state_cache_bytes: usize::try_from(site.config.server.state_cache_mib.min(1 << 20))
            .unwrap_or(0)
            << 20,
        ..Default::default()
    };
    autoprov_store::Store::connect_with(&location, &options)
        .await
        .with_context(|| {
            format!(
                "cannot open the device database {}",
                autoprov_store::redact_url(&location)
            )
        })
}

async fn serve(a: ServeArgs) -> Result<()> {
    purge_delay(0);
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
    let specs = tls_cli::listen_specs(&site, &a.listen, &a.https, &a.mtls)?;
    if specs.iter().any(|s| s.kind.is_tls()) {
        tls_cli::announce_server_cert(&site).await?;
    }
    autoprov_server::catalog::catalog_dir(&site)
        .and_then(|dir| autoprov_server::catalog::read_manifest(&dir))
        .context("the firmware catalogue cannot be loaded (run `autoprov check`)")?;
    let store = open_store_with(&site, true).await?;
    match autoprov_server::admin::auth::ensure_admin(&store).await {
        Ok(Some(pw)) => println!(
            "autoprov: created operator 'admin' for the web UI (/admin) with password: {pw}"
        ),
        Ok(None) => {}
        Err(e) => bail!("cannot create the first operator account: {e}"),
    }
    let state = autoprov_server::AppState::new(site, store.clone());
    let bound = autoprov_server::bind_listeners(&specs).await?;
    for (addr, kind) in bound.listeners() {
        let host = if addr.ip().is_unspecified() {
            local_ip().unwrap_or_else(|| "127.0.0.1".parse().expect("literal"))
        } else {
            addr.ip()
        };
        let host = SocketAddr::new(host, addr.port());
        let scheme = kind.scheme();
        if kind == autoprov_server::ListenerKind::Http {
            println!("autoprov: listening on {addr}");
        } else {
            println!("autoprov: listening on {addr} ({kind})");
        }
        println!("autoprov: innovaphone devices: set the update URL to {scheme}://{host}/update.php?type=#t&sn=#m&hwid=#h&ip=#i");
    }
    let side = discovery_cli::start_side_channels(&state, &bound.listeners()).await?;
    reload_on_sighup(state.clone());
    release_memory_when_quiet(state.clone());
    purge_delay(MI_PURGE_DELAY_DEFAULT);
    let result = bound.run(state, shutdown_signal()).await;
    side.stop().await;
    // Write what the write-behind queue still holds before the process ends.
    store.close().await;
    result?;
    Ok(())
}

/// Keep the heap in 4 KiB pages. mimalloc asks for transparent huge pages on its arenas
/// (and with THP "always" the kernel gives them to every heap): then one small allocation in a
/// part of the heap given back while quiet faults in 2 MiB again, and an idle server grew by
/// ~10 MiB within seconds from a handful of allocations. Costs nothing measurable here (the
/// first touch of a huge page zeroes 2 MiB at once, which showed in request profiles too).
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only; affects this process's memory policy.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc's option number of the purge delay (`mi_option_purge_delay` in `mimalloc.h`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's default purge delay, in milliseconds.
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 10;

/// Set mimalloc's purge delay: 0 while starting (the garbage of reading a big site and the
/// inventory goes back to the system as it is freed), the default when serving (purging on
/// every free would cost request time).
fn purge_delay(ms: std::ffi::c_long) {
    // SAFETY: plain call into the allocator with a documented option number.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Once the server has been quiet for a second or two, drop what is kept only for speed
/// ([`autoprov_server::AppState::trim_caches`]) and give memory the allocator keeps for later
/// back to the system. mimalloc returns freed pages lazily, on later allocations by the
/// thread that owns them, so the peak of a burst (a boot storm) would otherwise stay
/// resident while the server is idle; the C library's malloc (SQLite's) is trimmed too. Each collection runs on the runtime's threads (as
/// tasks), since a thread can only collect its own heap.
fn release_memory_when_quiet(state: autoprov_server::AppState) {
    // 1-2 s without a request: the caches only pay off under sustained load (a fleet that
    // keeps polling is never quiet that long), and an idle server should be small.
    const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    const RELEASE_AGAIN: u32 = 10;
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("autoprov-release".into())
        .spawn(move || {
            let mut seen = u64::MAX;
            let mut quiet_looks = 0u32;
            loop {
                std::thread::sleep(LOOK_EVERY);
                let now = state.activity();
                if now != seen {
                    seen = now;
                    quiet_looks = 0;
                    continue;
                }
                quiet_looks = quiet_looks.saturating_add(1);
                // At once, and again every RELEASE_AGAIN looks while quiet: the server's own
                // periodic work (the inventory's reconciliation reads every device, expiry)
                // allocates too.
                if quiet_looks != 1 && !quiet_looks.is_multiple_of(RELEASE_AGAIN) {
                    continue;
                }
                state.trim_caches();
                for _ in 0..16 {
                    runtime.spawn(async {
                        // SAFETY: plain call into the allocator; no pointers are passed.
                        unsafe { libmimalloc_sys::mi_collect(true) };
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    });
                }
                for _ in 0..4 {
                    // SAFETY: as above.
                    runtime.spawn_blocking(|| unsafe { libmimalloc_sys::mi_collect(true) });
                }
                // SAFETY: as above.
                unsafe { libmimalloc_sys::mi_collect(true) };
                // The page caches of idle SQLite connections (a few MiB each after a burst).
                runtime.block_on(state.store().release_memory());
                // SQLite (page caches, bound batch texts of a MiB or more) allocates through
                // the C library's malloc, whose arenas keep freed memory for reuse.
                #[cfg(target_env = "gnu")]
                // SAFETY: plain call into the C allocator; no pointers are passed.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the memory release thread");
    }
}

/// `kill -HUP`: reload the site like the web UI's "Reload site" (logged and audited).
fn reload_on_sighup(state: autoprov_server::AppState) {
    // Registered before serving starts: a SIGHUP never falls back to "terminate".
    #[cfg(unix)]
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    #[cfg(unix)]
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let r = state.reload_site().await;
            match &r {
                Ok(rep) => {
                    eprintln!("autoprov: SIGHUP: site reloaded");
                    for l in &rep.restart_needed {
                        eprintln!("autoprov: {l}");
                    }
                }
                Err(e) => {
                    eprintln!("autoprov: SIGHUP: reload refused, the running site stays:\n{e}")
                }
            }
            autoprov_server::admin::site_view::audit_reload(&state, "-", "sighup", &r).await;
        }
    });
    #[cfg(not(unix))]
    let _ = state;
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
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let c = autoprov_server::reload::check(dir);
    for l in &c.lines {
        println!("{l}");
    }
    if c.errors > 0 {
        bail!("{} has {} error(s)", path.display(), c.errors);
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

/// `IP232` + `00-90-33-30-00-af` → `IP232-30-00-af`, as innovaphone devices form `#h`.
fn default_hwid(device_type: &str, sn: &str) -> String {
    let parts: Vec<&str> = sn.split(['-', ':']).collect();
    if parts.len() >= 3 {
        format!("{device_type}-{}", parts[parts.len() - 3..].join("-"))
    } else {
        format!("{device_type}-{sn}")
    }
}
