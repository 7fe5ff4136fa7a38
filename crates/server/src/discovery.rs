//! Starts and stops the zero-touch side channels of `serve`: the SIP plug-and-play responder
//! ([`crate::sip::pnp`]), the mDNS/DNS-SD announcement ([`crate::mdns`]) and the TFTP server
//! ([`crate::tftp`]), each when its section of `autoprov.toml` enables it.
//!
//! It also decides the provisioning URL phones are given ([`provisioning_url`]). It takes no
//! decisions about devices and knows no wire format itself.

use std::net::SocketAddr;
use std::sync::Arc;

use autoprov_core::Site;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::sip::pnp::{self, PnpSettings, PnpStats};
use crate::tftp::{self, TftpSettings};

/// Problems starting a side channel. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{what}: {message}")]
    Config { what: &'static str, message: String },
    #[error("cannot listen for {what} on {addr}: {source} (is another process using the port? ports below 1024 need root or CAP_NET_BIND_SERVICE)")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot join the SIP plug-and-play group 224.0.1.75 on '{interface}': {source} (name the LAN interface in sip.interfaces, or set sip.multicast = false)")]
    Multicast {
        interface: String,
        source: std::io::Error,
    },
    #[error("cannot announce over mDNS: {0} (set mdns.enabled = false to run without it)")]
    Mdns(String),
}

/// The root URL phones are given: `[provisioning] base_url` when set, else
/// `http://<address>:<port>/` of the first HTTP listener (this host's outward address when the
/// listener is unspecified).
pub fn provisioning_url(site: &Site, http: &[SocketAddr]) -> String {
    let configured = site.config.provisioning.base_url.trim();
    if !configured.is_empty() {
        return if configured.ends_with('/') {
            configured.to_string()
        } else {
            format!("{configured}/")
        };
    }
    let addr = http
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let ip = if addr.ip().is_unspecified() {
        crate::sip::local_ip_towards("192.0.2.1".parse().expect("literal"))
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or_else(|| "127.0.0.1".parse().expect("literal"))
    } else {
        addr.ip()
    };
    format!(
        "http://{}/",
        crate::sip::hostport(SocketAddr::new(ip, addr.port()))
    )
}

/// The running side channels.
pub struct Discovery {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    mdns: Option<crate::mdns::Announcement>,
    /// One line per running side channel, for the operator.
    pub lines: Vec<String>,
    /// The plug-and-play responder's address and counters, when it runs.
    pub sip: Option<(SocketAddr, Arc<PnpStats>)>,
    /// The TFTP server's address, when it runs.
    pub tftp: Option<SocketAddr>,
}

/// Start what the site enables. `http` are the bound HTTP listeners (the first one is the
/// default provisioning URL and the mDNS port).
pub async fn start(state: &AppState, http: &[SocketAddr]) -> Result<Discovery, DiscoveryError> {
    let site = state.site_arc();
    let url = provisioning_url(&site, http);
    let (stop, rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut d = Discovery {
        stop,
        tasks: Vec::new(),
        mdns: None,
        lines: Vec::new(),
        sip: None,
        tftp: None,
    };
    let cfg = &site.config;
    if cfg.sip.enabled {
        let responder = pnp::bind(&cfg.sip)?;
        let local = responder.local_addr();
        d.sip = Some((local, responder.stats()));
        d.lines.push(format!(
            "SIP plug-and-play on udp {local}{}; phones are sent {url}",
            if cfg.sip.multicast {
                " and multicast 224.0.1.75"
            } else {
                ""
            }
        ));
        let mut settings = PnpSettings::new(&cfg.sip, &url, cfg.status.logkeep);
        settings.record = cfg.provisioning.inventory;
        d.tasks.push(tokio::spawn(responder.run(
            state.clone(),
            settings,
            stopped(),
        )));
    }
    if cfg.tftp.enabled {
        let server = tftp::bind(&cfg.tftp)?;
        let local = server.local_addr();
        d.tftp = Some(local);
        d.lines.push(format!(
            "TFTP (read-only, same files as HTTP) on udp {local}"
        ));
        let settings = TftpSettings::new(&cfg.tftp, &url, http.first().copied());
        d.tasks
            .push(tokio::spawn(server.run(state.clone(), settings, stopped())));
    }
    if cfg.mdns.enabled {
        let http_port = http.first().map(|a| a.port()).unwrap_or(8080);
        let sip_port = d.sip.as_ref().map(|(a, _)| a.port());
        let a = crate::mdns::announce(&cfg.mdns, &url, http_port, sip_port)?;
        for name in a.names() {
            d.lines.push(format!("mDNS: announcing {name}"));
        }
        d.mdns = Some(a);
    }
    Ok(d)
}

impl Discovery {
    /// Stop every side channel and wait for them.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(a) = self.mdns.take() {
            a.stop();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let mut site = Site {
            dir: ".".into(),
            config: Default::default(),
        };
        let http: Vec<SocketAddr> = vec!["127.0.0.1:8080".parse().unwrap()];
        assert_eq!(provisioning_url(&site, &http), "http://127.0.0.1:8080/");
        let any: Vec<SocketAddr> = vec!["0.0.0.0:8080".parse().unwrap()];
        assert!(provisioning_url(&site, &any).ends_with(":8080/"));
        site.config.provisioning.base_url = "http://prov.example".into();
        assert_eq!(provisioning_url(&site, &http), "http://prov.example/");
    }
}
