//! The TLS side of the command line: the listeners of `serve` (`--https`, `--mtls`, the server
//! certificate message), `autoprov ca init|sign` (the built-in CA) and
//! `autoprov certs list|download|upload` (the operator's part of the certificate roll-out).
//!
//! Thin: the work is done by `autoprov_server::{tls, pki, rollout}`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

use autoprov_core::Site;
use autoprov_server::{ListenSpec, ListenerKind};

#[derive(Subcommand)]
pub enum CaCmd {
    /// Create the site's CA: key `[ca] key` and certificate `[ca] cert` (CN `[ca] cn`).
    Init {
        /// Site directory (holds autoprov.toml).
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
        /// Replace an existing CA (certificates it signed stop being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Approve a device's pending CSR: sign it with the site's CA. The certificate gets the
    /// serial without dashes as CN (whatever the CSR asked for) and reaches the device with its
    /// next poll.
    Sign {
        /// Site directory (holds autoprov.toml).
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
        /// The device's serial, e.g. 00-90-33-30-00-af.
        #[arg(long)]
        sn: String,
        /// Use this CN instead (e.g. the hwid IP232-30-00-af).
        #[arg(long)]
        cn: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Devices with a pending CSR or a signed certificate waiting to be sent.
    List {
        /// Site directory (holds autoprov.toml).
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
    },
    /// Write a device's CSR (PEM, or DER with --der) to a file or stdout, to submit it to a CA.
    Download {
        /// Site directory (holds autoprov.toml).
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
        /// The device's serial.
        #[arg(long)]
        sn: String,
        /// DER instead of PEM.
        #[arg(long)]
        der: bool,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Hand over the certificate a CA signed from a device's CSR (PEM or DER); it is checked
    /// against the CSR and sent with the device's next poll.
    Upload {
        /// Site directory (holds autoprov.toml).
        #[arg(long, default_value = "demo-site", env = "AUTOPROV_SITE")]
        site: PathBuf,
        /// The device's serial.
        #[arg(long)]
        sn: String,
        /// The signed certificate file.
        file: PathBuf,
    },
}

/// The listeners of `serve`: each kind from the command line when given there, else from the
/// site's configuration.
pub fn listen_specs(
    site: &Site,
    http: &[SocketAddr],
    https: &[SocketAddr],
    mtls: &[SocketAddr],
) -> Result<Vec<ListenSpec>> {
    let from = |cli: &[SocketAddr], cfg: &[String], what: &str| -> Result<Vec<SocketAddr>> {
        if !cli.is_empty() {
            return Ok(cli.to_vec());
        }
        cfg.iter()
            .map(|s| {
                s.parse()
                    .with_context(|| format!("{what}: '{s}' is not ADDR:PORT"))
            })
            .collect()
    };
    let mut specs = Vec::new();
    for (kind, addrs) in [
        (
            ListenerKind::Http,
            from(http, &site.config.server.listen, "[server] listen")?,
        ),
        (
            ListenerKind::Https,
            from(https, &site.config.tls.https_listen, "[tls] https_listen")?,
        ),
        (
            ListenerKind::Mtls,
            from(mtls, &site.config.tls.mtls_listen, "[tls] mtls_listen")?,
        ),
    ] {
        specs.extend(addrs.into_iter().map(|addr| ListenSpec { addr, kind }));
    }
    Ok(specs)
}

/// Create the server certificate when needed and say which one is served.
pub async fn announce_server_cert(site: &Site) -> Result<()> {
    let s = site.clone();
    let info = tokio::task::spawn_blocking(move || autoprov_server::tls::ensure_server_cert(&s))
        .await
        .context("server certificate")??;
    if info.generated {
        println!(
            "autoprov: created a self-signed server certificate {} (CN '{}'); replace {} and {} with your own at any time, new connections use them without a restart",
            info.cert, info.subject_cn, site.config.tls.cert, site.config.tls.key
        );
    }
    println!(
        "autoprov: server certificate {} (CN '{}', valid until {}), SHA-256 fingerprint {}",
        info.cert,
        info.subject_cn,
        autoprov_server::rollout::format_time(info.not_after),
        info.fingerprint
    );
    Ok(())
}

pub fn ca(cmd: CaCmd, load_site: impl Fn(&Path) -> Result<Site>) -> Result<()> {
    match cmd {
        CaCmd::Init { site, force } => {
            let site = load_site(&site)?;
            let ca = autoprov_server::pki::ca_init(&site, force)?;
            println!(
                "autoprov: created the CA '{}' ({} and key {}), valid until {}, SHA-256 fingerprint {}",
                ca.subject_cn,
                site.config.ca.cert,
                site.config.ca.key,
                autoprov_server::rollout::format_time(ca.not_after),
                ca.fingerprint
            );
            let cc = &site.config.customcerts;
            let sep = if cc.canamesep.is_empty() {
                ","
            } else {
                cc.canamesep.as_str()
            };
            if !cc.caname.split(sep).any(|n| n.trim() == ca.subject_cn) {
                println!(
                    "autoprov: add \"{}\" to customcerts.caname in autoprov.toml, so that devices with certificates from this CA are accepted",
                    ca.subject_cn
                );
            }
            Ok(())
        }
        CaCmd::Sign { site, sn, cn } => {
            let site = load_site(&site)?;
            let s = autoprov_server::rollout::sign_with_ca(&site, &sn, cn.as_deref())?;
            let f = autoprov_server::rollout::device_files(&site, &sn)?;
            println!(
                "autoprov: signed the CSR of {sn}: CN '{}', issuer '{}', valid until {}, serial {}; stored as {}, the device gets it with its next poll",
                s.subject_cn,
                s.issuer_cn,
                autoprov_server::rollout::format_time(s.not_after),
                s.serial,
                f.signed_rel
            );
            Ok(())
        }
    }
}

pub fn certs(cmd: CertsCmd, load_site: impl Fn(&Path) -> Result<Site>) -> Result<()> {
    use autoprov_server::rollout;
    match cmd {
        CertsCmd::List { site } => {
            let site = load_site(&site)?;
            let list = rollout::list(&site)?;
            println!("{:<24} {:<40} SIGNED CERTIFICATE", "SN", "CSR");
            for d in &list {
                let csr = match &d.csr {
                    None => "-".to_string(),
                    Some(Ok(cn)) => format!("pending (asks for CN '{cn}')"),
                    Some(Err(e)) => format!("unusable: {e}"),
                };
                let signed = match &d.signed {
                    None => "-".to_string(),
                    Some(Ok(s)) => format!(
                        "waiting for the device (CN '{}', issuer '{}', until {})",
                        s.subject_cn,
                        s.issuer_cn,
                        rollout::format_time(s.not_after)
                    ),
                    Some(Err(e)) => format!("unusable: {e}"),
                };
                println!("{:<24} {:<40} {signed}", d.sn, csr);
            }
            println!("{} device(s)", list.len());
            Ok(())
        }
        CertsCmd::Download { site, sn, der, out } => {
            let site = load_site(&site)?;
            let csr = rollout::pending_csr(&site, &sn)?;
            let bytes = if der {
                csr.der.clone()
            } else {
                autoprov_server::pki::csr_pem(&csr.der).into_bytes()
            };
            match out {
                Some(p) => {
                    std::fs::write(&p, &bytes)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    eprintln!(
                        "autoprov: wrote the CSR of {sn} (asks for CN '{}') to {}",
                        csr.subject_cn,
                        p.display()
                    );
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            Ok(())
        }
        CertsCmd::Upload { site, sn, file } => {
            let site = load_site(&site)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let s = rollout::install_signed(&site, &sn, &bytes)?;
            let f = rollout::device_files(&site, &sn)?;
            println!(
                "autoprov: stored the certificate for {sn} (CN '{}', issuer '{}', valid until {}) as {}; the device gets it with its next poll",
                s.subject_cn,
                s.issuer_cn,
                rollout::format_time(s.not_after),
                f.signed_rel
            );
            Ok(())
        }
    }
}
