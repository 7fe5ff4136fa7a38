//! mDNS / DNS-SD announcement of the provisioning service (`[mdns]`), for phones and tools
//! that find servers on the LAN that way.
//!
//! Announces `mdns.service_type` (default `_autoprov._tcp`) on the HTTP port with TXT `url=`
//! (the provisioning root URL), `path=/` and `txtvers=1`; optionally Digium's
//! `_digiumproxy._udp` with `sipUrl=` and `serviceType=` (vendor facts 1.3); and any
//! `[[mdns.extra]]` services. Uses the pure-Rust `mdns-sd` responder, which runs on its own
//! thread; this module only describes the services and starts/stops it.

use std::collections::HashMap;

use autoprov_core::config::Mdns;
use mdns_sd::{ServiceDaemon, ServiceInfo};

use crate::discovery::DiscoveryError;

/// A running announcement; [`Announcement::stop`] withdraws it.
pub struct Announcement {
    daemon: ServiceDaemon,
    fullnames: Vec<String>,
}

/// The host part of `http://host:port/...` (brackets removed).
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map(|p| p.1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    authority
        .rsplit_once(':')
        .map(|p| p.0)
        .unwrap_or(authority)
        .to_string()
}

fn local_host_name() -> String {
    let name = dns_lookup::get_hostname().unwrap_or_else(|_| "autoprov".into());
    let name: String = name
        .split('.')
        .next()
        .unwrap_or("autoprov")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "autoprov.local.".into()
    } else {
        format!("{name}.local.")
    }
}

/// One service to announce: type (without `.local.`), port, TXT entries.
type Service = (String, u16, Vec<(String, String)>);

/// The services `[mdns]` asks for.
fn services(cfg: &Mdns, url: &str, http_port: u16, sip_port: Option<u16>) -> Vec<Service> {
    let mut out = vec![(
        cfg.service_type.clone(),
        http_port,
        vec![
            ("txtvers".to_string(), "1".to_string()),
            ("url".to_string(), url.to_string()),
            ("path".to_string(), "/".to_string()),
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ],
    )];
    if cfg.digium {
        let port = sip_port.unwrap_or(5060);
        let host = url_host(url);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        out.push((
            "_digiumproxy._udp".to_string(),
            port,
            vec![
                (
                    "sipUrl".to_string(),
                    format!("sip:proxy@{host}:{port};transport=udp"),
                ),
                ("serviceType".to_string(), cfg.digium_service_type.clone()),
            ],
        ));
    }
    for e in &cfg.extra {
        let txt = e
            .txt
            .iter()
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("{url}", url)))
            .collect();
        out.push((e.service_type.clone(), e.port, txt));
    }
    out
}

/// Start announcing. `sip_port` is the plug-and-play port when that runs (for Digium).
pub fn announce(
    cfg: &Mdns,
    url: &str,
    http_port: u16,
    sip_port: Option<u16>,
) -> Result<Announcement, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(|e| DiscoveryError::Mdns(e.to_string()))?;
    let host = local_host_name();
    let mut fullnames = Vec::new();
    for (ty, port, txt) in services(cfg, url, http_port, sip_port) {
        let ty_domain = format!("{}.local.", ty.trim_end_matches('.'));
        let props: HashMap<String, String> = txt.into_iter().collect();
        let info = ServiceInfo::new(&ty_domain, &cfg.instance, &host, "", port, props)
            .map_err(|e| DiscoveryError::Mdns(format!("{ty}: {e}")))?
            .enable_addr_auto();
        fullnames.push(info.get_fullname().to_string());
        daemon
            .register(info)
            .map_err(|e| DiscoveryError::Mdns(format!("{ty}: {e}")))?;
    }
    tracing::info!(services = ?fullnames, "mDNS announcement running");
    Ok(Announcement { daemon, fullnames })
}

impl Announcement {
    /// Full DNS-SD names being announced (`autoprov._autoprov._tcp.local.`).
    pub fn names(&self) -> &[String] {
        &self.fullnames
    }

    /// Withdraw the services (goodbye packets) and stop the responder thread.
    pub fn stop(self) {
        for name in &self.fullnames {
            if let Ok(rx) = self.daemon.unregister(name) {
                let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
            }
        }
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_list() {
        let mut cfg = Mdns {
            digium: true,
            ..Default::default()
        };
        cfg.extra.push(autoprov_core::config::MdnsService {
            service_type: "_http._tcp".into(),
            port: 80,
            txt: vec!["u={url}x".into()],
        });
        let s = services(&cfg, "http://192.0.2.5:8080/", 8080, Some(5062));
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, "_autoprov._tcp");
        assert_eq!(s[1].1, 5062);
        assert_eq!(s[1].2[0].1, "sip:proxy@192.0.2.5:5062;transport=udp");
        assert_eq!(s[2].2[0].1, "http://192.0.2.5:8080/x");
        assert_eq!(url_host("http://[fd00::1]:80/"), "fd00::1");
    }
}
