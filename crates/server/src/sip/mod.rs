//! SIP for zero-touch provisioning: the plug-and-play responder ([`pnp`]) that tells booting
//! phones the provisioning URL, and the check-sync/resync sender ([`notify`]) that makes phones
//! re-read their configuration now.
//!
//! Only UDP, only what those two jobs need, on a hand-written message model ([`message`]) with
//! hard limits on sizes and counts. Which URL and which `Event` a brand gets is decided in
//! `autoprov_core::discovery`; this module only speaks the wire protocol. It never registers,
//! places calls or proxies anything.

mod digest;
pub mod message;
pub mod notify;
pub mod pnp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

pub use message::{Message, ParseError};

/// A fresh random token for tags, branches, Call-IDs and cnonces (not a secret).
pub(crate) fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// The local address this host uses towards `peer` (a routing lookup; no packet is sent).
pub(crate) fn local_ip_towards(peer: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = match peer {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    s.connect(SocketAddr::new(peer, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// `host:port` for SIP headers (IPv6 in brackets).
pub(crate) fn hostport(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", addr.port()),
            None => format!("[{v6}]:{}", addr.port()),
        },
        IpAddr::V4(v4) => format!("{v4}:{}", addr.port()),
    }
}

/// The MAC in a plug-and-play URI's user part, in every spelling the vendor facts list:
/// `sip:MAC000413a11fa7@…`, `sip:MAC%3a000413A11FA7@…` (also `%3A`), `sip:MAC:00:04:13:…@…`.
/// Returns 12 lower-case hex digits.
pub fn mac_from_uri(uri: &str) -> Option<String> {
    let uri = message::uri_of(uri);
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("SIP:"))?;
    let user = rest.split_once('@')?.0;
    let user = user.split(';').next().unwrap_or(user);
    let mac = if user.len() > 3 && user[..3].eq_ignore_ascii_case("mac") {
        let m = &user[3..];
        if m.len() > 3 && m[..3].eq_ignore_ascii_case("%3a") {
            &m[3..]
        } else {
            m.strip_prefix(':').unwrap_or(m)
        }
    } else {
        user
    };
    autoprov_core::discovery::normalize_mac(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_spellings() {
        for uri in [
            "sip:MAC000413a11fa7@224.0.1.75",
            "sip:MAC%3a000413A11FA7@224.0.1.75",
            "sip:MAC%3A000413A11FA7@example.com",
            "sip:mac:000413a11fa7@224.0.1.75",
            "sip:MAC:00:04:13:a1:1f:a7@224.0.1.75",
            "<sip:MAC%3a000413A11FA7@224.0.1.75>;tag=1",
            "\"x\" <sip:MAC000413A11FA7@224.0.1.75;user=phone>",
        ] {
            assert_eq!(mac_from_uri(uri).as_deref(), Some("000413a11fa7"), "{uri}");
        }
        assert_eq!(mac_from_uri("sip:alice@example.com"), None);
        assert_eq!(mac_from_uri("sip:MAC%3a0004@x"), None);
        assert_eq!(mac_from_uri("tel:+49"), None);
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(token(), token());
        assert_eq!(
            hostport("[::ffff:10.0.0.1]:5060".parse().unwrap()),
            "10.0.0.1:5060"
        );
    }
}
