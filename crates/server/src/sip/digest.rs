//! HTTP digest authentication as SIP uses it (RFC 3261 §22.4, RFC 2617): answer a 401/407
//! challenge to a NOTIFY. MD5 only (with or without `qop=auth`), which is what phones offer.

use md5::{Digest, Md5};

/// The parts of a `WWW-Authenticate` / `Proxy-Authenticate: Digest …` challenge we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `qop` options offered; we answer `auth` when it is offered.
    pub qop_auth: bool,
    pub algorithm: Option<String>,
}

/// Parse a `Digest` challenge; `None` for other schemes, missing realm/nonce or an algorithm
/// other than MD5.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let rest = value.trim();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut qop_auth = false;
    let mut algorithm = None;
    for (k, v) in split_params(params) {
        match k.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "nonce" => nonce = Some(v),
            "opaque" => opaque = Some(v),
            "qop" => qop_auth = v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
            "algorithm" => algorithm = Some(v),
            _ => {}
        }
    }
    if let Some(a) = &algorithm {
        if !a.eq_ignore_ascii_case("MD5") {
            return None;
        }
    }
    Some(Challenge {
        realm: realm?,
        nonce: nonce?,
        opaque,
        qop_auth,
        algorithm,
    })
}

/// `k1="v 1", k2=v2` → pairs, honouring quotes (commas inside quotes do not split).
fn split_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut push = |cur: &mut String| {
        if let Some((k, v)) = cur.split_once('=') {
            out.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
        cur.clear();
    };
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => push(&mut cur),
            _ => cur.push(c),
        }
    }
    push(&mut cur);
    out
}

fn hex_md5(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Authorization` (or `Proxy-Authorization`) value answering `ch` for `method uri`.
pub fn authorization(
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> String {
    let ha1 = hex_md5(&format!("{user}:{}:{password}", ch.realm));
    let ha2 = hex_md5(&format!("{method}:{uri}"));
    let nc = "00000001";
    let response = if ch.qop_auth {
        hex_md5(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce))
    } else {
        hex_md5(&format!("{ha1}:{}:{ha2}", ch.nonce))
    };
    let mut v = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5",
        ch.realm, ch.nonce
    );
    if ch.qop_auth {
        v.push_str(&format!(", cnonce=\"{cnonce}\", nc={nc}, qop=auth"));
    }
    if let Some(o) = &ch.opaque {
        v.push_str(&format!(", opaque=\"{o}\""));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5, with the method and URI of the example.
        let ch = parse_challenge(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert!(ch.qop_auth);
        let a = authorization(
            &ch,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
        );
        assert!(
            a.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{a}"
        );
        assert!(a.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    #[test]
    fn without_qop_and_other_schemes() {
        let ch = parse_challenge(r#"Digest realm="r", nonce="n", algorithm=MD5"#).unwrap();
        assert!(!ch.qop_auth);
        let a = authorization(&ch, "u", "p", "NOTIFY", "sip:10.0.0.1:5060", "c");
        assert!(!a.contains("qop"));
        assert_eq!(parse_challenge("Basic realm=\"x\""), None);
        assert_eq!(
            parse_challenge(r#"Digest realm="r", nonce="n", algorithm=SHA-256"#),
            None
        );
        assert_eq!(parse_challenge(r#"Digest nonce="n""#), None);
    }
}
