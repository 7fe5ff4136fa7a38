//! Checks of the zero-touch sections `[sip]`, `[mdns]` and `[tftp]` (with file:line:column
//! diagnostics like the rest of [`super`]).

use std::net::SocketAddr;

use super::{is_http_url, Seg, Validator, I, K};
use crate::config::SiteConfig;
use crate::discovery::Brand;

impl Validator<'_> {
    pub(super) fn check_discovery(&mut self, c: &SiteConfig) {
        self.check_sip(c);
        self.check_mdns(c);
        self.check_tftp(c);
    }

    fn check_udp_listen(&mut self, section: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    &[K(section), K("listen")],
                    format!(
                        "{section}.listen '{value}' is not an address:port, e.g. \"0.0.0.0:{}\"",
                        if section == "sip" { 5060 } else { 69 }
                    ),
                );
                None
            }
        }
    }

    fn at_least_one(&mut self, path: &[Seg<'_>], what: &str, value: u64) {
        if value == 0 {
            self.error(path, format!("{what} must be at least 1"));
        }
    }

    fn check_sip(&mut self, c: &SiteConfig) {
        let s = &c.sip;
        if let Some(addr) = self.check_udp_listen("sip", &s.listen) {
            if s.multicast && !addr.is_ipv4() {
                self.error(
                    &[K("sip"), K("listen")],
                    format!(
                        "sip.listen '{}' is IPv6, but plug-and-play multicast (224.0.1.75) needs \
                         an IPv4 address such as \"0.0.0.0:5060\" (or set sip.multicast = false)",
                        s.listen
                    ),
                );
            }
        }
        for (i, name) in s.interfaces.iter().enumerate() {
            let ok = name.parse::<std::net::Ipv4Addr>().is_ok()
                || (!name.is_empty()
                    && name.len() <= 15
                    && !name.contains(['/', ' ', '\t', '.', ':']));
            if !ok {
                self.error(
                    &[K("sip"), K("interfaces"), I(i)],
                    format!(
                        "sip.interfaces '{name}' is neither an IPv4 address nor an interface \
                         name such as \"eth0\""
                    ),
                );
            }
        }
        for (brand, template) in &s.pnp_urls {
            let path = [K("sip"), K("pnp_urls"), K(brand.as_str())];
            if Brand::from_id(brand).is_none() {
                let ids: Vec<&str> = Brand::ALL.iter().map(|b| b.id()).collect();
                self.error(
                    &path,
                    format!(
                        "sip.pnp_urls: '{brand}' is not a known brand; use one of {}",
                        ids.join(", ")
                    ),
                );
            }
            if !(template.contains("{base}") || is_http_url(template)) {
                self.error(
                    &path,
                    format!(
                        "sip.pnp_urls.{brand} '{template}' must start with {{base}} or be an \
                         http(s) URL"
                    ),
                );
            }
        }
        self.at_least_one(
            &[K("sip"), K("max_per_second")],
            "sip.max_per_second",
            s.max_per_second.into(),
        );
        self.at_least_one(
            &[K("sip"), K("notify_rate")],
            "sip.notify_rate",
            s.notify_rate.into(),
        );
        self.at_least_one(
            &[K("sip"), K("notify_port")],
            "sip.notify_port",
            s.notify_port.into(),
        );
        self.at_least_one(
            &[K("sip"), K("notify_timeout")],
            "sip.notify_timeout",
            s.notify_timeout,
        );
        if !s.notify_password.is_empty() && !s.notify_password_file.is_empty() {
            self.error(
                &[K("sip"), K("notify_password_file")],
                "sip.notify_password and sip.notify_password_file are both set; use only one"
                    .into(),
            );
        }
        if !s.notify_password_file.is_empty() {
            self.check_path(
                &s.notify_password_file,
                &[K("sip"), K("notify_password_file")],
                "sip.notify_password_file",
            );
        }
        let has_password = !s.notify_password.is_empty() || !s.notify_password_file.is_empty();
        if has_password && s.notify_user.is_empty() {
            self.warn(
                &[K("sip"), K("notify_user")],
                "a NOTIFY password is set but sip.notify_user is empty, so digest challenges \
                 are not answered"
                    .into(),
            );
        }
    }

    fn check_service_type(&mut self, path: &[Seg<'_>], what: &str, ty: &str) {
        let ok = ty
            .strip_prefix('_')
            .and_then(|t| t.strip_suffix("._tcp").or_else(|| t.strip_suffix("._udp")))
            .is_some_and(|name| {
                !name.is_empty()
                    && name.len() <= 15
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            self.error(
                path,
                format!(
                    "{what} '{ty}' must be a DNS-SD service type such as \"_autoprov._tcp\" \
                     (underscore, at most 15 letters, digits or '-', then ._tcp or ._udp)"
                ),
            );
        }
    }

    fn check_mdns(&mut self, c: &SiteConfig) {
        let m = &c.mdns;
        if m.instance.trim().is_empty() || m.instance.len() > 63 {
            self.error(
                &[K("mdns"), K("instance")],
                "mdns.instance must be a name of 1 to 63 bytes, e.g. \"autoprov\"".into(),
            );
        }
        self.check_service_type(
            &[K("mdns"), K("service_type")],
            "mdns.service_type",
            &m.service_type,
        );
        if m.digium && !["asterisk", "switchvox"].contains(&m.digium_service_type.as_str()) {
            self.warn(
                &[K("mdns"), K("digium_service_type")],
                format!(
                    "mdns.digium_service_type '{}' is neither \"asterisk\" nor \"switchvox\", \
                     the values Digium phones are documented with",
                    m.digium_service_type
                ),
            );
        }
        for (i, e) in m.extra.iter().enumerate() {
            self.check_service_type(
                &[K("mdns"), K("extra"), I(i), K("service_type")],
                "mdns.extra service_type",
                &e.service_type,
            );
            self.at_least_one(
                &[K("mdns"), K("extra"), I(i), K("port")],
                "mdns.extra port",
                e.port.into(),
            );
            for (j, t) in e.txt.iter().enumerate() {
                if !t.contains('=') || t.starts_with('=') {
                    self.error(
                        &[K("mdns"), K("extra"), I(i), K("txt"), I(j)],
                        format!("mdns.extra txt '{t}' must be key=value"),
                    );
                }
            }
        }
    }

    fn check_tftp(&mut self, c: &SiteConfig) {
        let t = &c.tftp;
        self.check_udp_listen("tftp", &t.listen);
        self.at_least_one(
            &[K("tftp"), K("max_sessions")],
            "tftp.max_sessions",
            t.max_sessions.into(),
        );
        if !(1..=255).contains(&t.timeout) {
            self.error(
                &[K("tftp"), K("timeout")],
                "tftp.timeout must be 1 to 255 seconds".into(),
            );
        }
        self.at_least_one(&[K("tftp"), K("retries")], "tftp.retries", t.retries.into());
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::validate_text;

    fn errors(toml: &str) -> Vec<String> {
        let (_, d) = validate_text("t.toml", toml);
        d.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(errors("").iter().all(|d| !d.contains("error")));
    }

    #[test]
    fn positions() {
        let e = errors("[sip]\nlisten = \"nope\"\n[tftp]\ntimeout = 0\n");
        assert!(
            e.iter()
                .any(|d| d.starts_with("t.toml:2:10: error: sip.listen 'nope'")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|d| d.starts_with("t.toml:4:11: error: tftp.timeout")),
            "{e:?}"
        );
        let e = errors("[sip.pnp_urls]\nacme = \"{base}/\"\n");
        assert!(
            e.iter()
                .any(|d| d.starts_with("t.toml:2:8: error: sip.pnp_urls: 'acme'")),
            "{e:?}"
        );
        let e = errors("[mdns]\nservice_type = \"autoprov\"\n");
        assert!(
            e.iter()
                .any(|d| d.starts_with("t.toml:2:16: error: mdns.service_type")),
            "{e:?}"
        );
        let e = errors("[sip]\ninterfaces = [\"eth0\", \"10.0.0.1\", \"a b\"]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.toml:2:35: error"), "{e:?}");
    }
}
