//! HTTP credentials for phones that support them (Basic and Digest, RFC 7617 / RFC 7616 MD5
//! with `qop=auth`): the settings name a user and password (per device, group, model or
//! vendor), and the vendor files are only sent to a request that proves them.
//!
//! Nonces are stateless: `<hex time>.<md5(time:secret)>` with a secret drawn per process, valid
//! for [`NONCE_TTL`] seconds. Nothing here decides which devices need credentials — the
//! settings do; this module only checks a request against them and builds the challenge.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};

/// The realm phones see in the challenge.
pub const REALM: &str = "autoprov";
/// Seconds a nonce stays valid.
pub const NONCE_TTL: i64 = 300;

fn secret() -> &'static str {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut b = [0u8; 16];
        if getrandom_fill(&mut b).is_err() {
            // Fall back to the start time; nonces then only resist casual replay.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            b = t.to_le_bytes();
        }
        hex(&b)
    })
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn md5_hex(s: &str) -> String {
    hex(&Md5::digest(s.as_bytes()))
}

fn nonce(now: i64) -> String {
    format!("{now:x}.{}", md5_hex(&format!("{now}:{}", secret())))
}

fn nonce_fresh(n: &str, now: i64) -> bool {
    let Some((t, mac)) = n.split_once('.') else {
        return false;
    };
    let Ok(t) = i64::from_str_radix(t, 16) else {
        return false;
    };
    mac == md5_hex(&format!("{t}:{}", secret())) && now >= t && now - t <= NONCE_TTL
}

/// Whether the request carries the right credentials for `(user, password)`.
pub fn check(headers: &HeaderMap, method: &str, user: &str, password: &str, now: i64) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return decode_base64(rest.trim())
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|pair| pair == format!("{user}:{password}"));
    }
    if !scheme.eq_ignore_ascii_case("digest") {
        return false;
    }
    let p = digest_params(rest);
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let (Some(name), Some(realm), Some(n), Some(uri), Some(response)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return false;
    };
    if name != user || realm != REALM || !nonce_fresh(n, now) {
        return false;
    }
    if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
        return false;
    }
    let ha1 = md5_hex(&format!("{user}:{REALM}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let expected = match get("qop") {
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                return false;
            };
            md5_hex(&format!("{ha1}:{n}:{nc}:{cnonce}:auth:{ha2}"))
        }
        Some(_) => return false,
        None => md5_hex(&format!("{ha1}:{n}:{ha2}")),
    };
    expected.eq_ignore_ascii_case(response)
}

/// `401` with a Digest and a Basic challenge.
pub fn challenge(now: i64, why: &str) -> Response {
    let digest = format!(
        "Digest realm=\"{REALM}\", qop=\"auth\", algorithm=MD5, nonce=\"{}\"",
        nonce(now)
    );
    let mut r = (
        StatusCode::UNAUTHORIZED,
        format!("# credentials required: {why}\r\n"),
    )
        .into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.append(header::WWW_AUTHENTICATE, v);
    }
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"autoprov\""),
    );
    r
}

/// `k=v, k="v"` pairs of a Digest header (quoted values may hold commas).
fn digest_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            value = q[..end].to_string();
            rest = q.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((name, value));
    }
    out
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn basic() {
        // "phone:s3cret"
        assert!(check(
            &with("Basic cGhvbmU6czNjcmV0"),
            "GET",
            "phone",
            "s3cret",
            100
        ));
        assert!(!check(
            &with("Basic cGhvbmU6d3Jvbmc="),
            "GET",
            "phone",
            "s3cret",
            100
        ));
        assert!(!check(&HeaderMap::new(), "GET", "phone", "s3cret", 100));
    }

    #[test]
    fn digest_round_trip_and_expiry() {
        let now = 1_000_000;
        let n = nonce(now);
        let ha1 = md5_hex("phone:autoprov:s3cret");
        let ha2 = md5_hex("GET:/y000000000068.cfg");
        let resp = md5_hex(&format!("{ha1}:{n}:00000001:abc:auth:{ha2}"));
        let h = format!(
            "Digest username=\"phone\", realm=\"autoprov\", nonce=\"{n}\", uri=\"/y000000000068.cfg\", qop=auth, nc=00000001, cnonce=\"abc\", response=\"{resp}\", algorithm=MD5"
        );
        assert!(check(&with(&h), "GET", "phone", "s3cret", now + 10));
        assert!(!check(&with(&h), "GET", "phone", "other", now + 10));
        assert!(!check(
            &with(&h),
            "GET",
            "phone",
            "s3cret",
            now + NONCE_TTL + 1
        ));
        let forged = h.replace(&n, &format!("{:x}.{}", now, md5_hex("x")));
        assert!(!check(&with(&forged), "GET", "phone", "s3cret", now + 10));
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("cGhvbmU6czNjcmV0").unwrap(), b"phone:s3cret");
        assert!(decode_base64("!!").is_none());
    }
}
