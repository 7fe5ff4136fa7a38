//! Operator authentication: argon2 password hashes, bootstrap of the first account, browser
//! sessions (secure cookie + CSRF token), API tokens, login rate limiting and the audit log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use sha2::Digest;

use autoprov_store::Store;

use crate::app::{now, AppState, ListenerInfo};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "autoprov_session";
/// Name of the pre-login CSRF cookie (double submit on the login form).
pub const LOGIN_COOKIE: &str = "autoprov_login";
/// Session lifetime (seconds).
pub const SESSION_TTL: i64 = 8 * 3600;
/// Failed logins per peer address allowed in [`FAIL_WINDOW`] before refusing with 429.
pub const MAX_FAILURES: u32 = 5;
/// Window of the login rate limit (seconds).
pub const FAIL_WINDOW: i64 = 300;
/// Environment variable with the first operator's password.
pub const PASSWORD_ENV: &str = "AUTOPROV_ADMIN_PASSWORD";
/// Environment variable naming a file with the first operator's password.
pub const PASSWORD_FILE_ENV: &str = "AUTOPROV_ADMIN_PASSWORD_FILE";

/// A random secret: 32 bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // Never fall back to a weak secret.
        panic!("the system random number generator failed");
    }
    hex(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a secret, hex: how sessions and tokens are keyed in the store.
pub fn secret_hash(secret: &str) -> String {
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

/// argon2id hash (PHC string) of `password`.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches, verified for unknown user names so that they take as long
/// as known ones.
pub fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash_password(&random_token()))
}

/// Set (or create) the account `user` with `password`.
pub async fn set_password(store: &Store, user: &str, password: &str) -> autoprov_store::Result<()> {
    let hash = tokio::task::spawn_blocking({
        let p = password.to_string();
        move || hash_password(&p)
    })
    .await
    .unwrap_or_default();
    store.user_set(user, &hash, now()).await
}

/// Create an API token for `user`; returns the secret (shown once, stored hashed).
pub async fn create_token(
    store: &Store,
    user: &str,
    label: &str,
) -> autoprov_store::Result<String> {
    let t = random_token();
    store
        .token_add(&secret_hash(&t), user, label, now())
        .await?;
    Ok(t)
}

/// First run: when no operator account exists, create `admin` with the password from
/// `AUTOPROV_ADMIN_PASSWORD`, the file named by `AUTOPROV_ADMIN_PASSWORD_FILE`, or a random
/// one. Returns `Some(password)` when a random password was generated (print it once).
pub async fn ensure_admin(store: &Store) -> Result<Option<String>, String> {
    if store.user_count().await.map_err(|e| e.to_string())? > 0 {
        return Ok(None);
    }
    let (password, generated) = if let Ok(p) = std::env::var(PASSWORD_ENV) {
        (p, false)
    } else if let Ok(f) = std::env::var(PASSWORD_FILE_ENV) {
        let p = std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read {PASSWORD_FILE_ENV} {f}: {e}"))?;
        (p.trim().to_string(), false)
    } else {
        (random_token()[..20].to_string(), true)
    };
    if password.len() < 8 {
        return Err("the operator password must have at least 8 characters".into());
    }
    set_password(store, "admin", &password)
        .await
        .map_err(|e| e.to_string())?;
    Ok(generated.then_some(password))
}

/// Who is calling, and the CSRF token of their session.
#[derive(Debug, Clone)]
pub struct Operator {
    pub user: String,
    /// Empty for API tokens (no CSRF needed: not sent by browsers automatically).
    pub csrf: String,
    pub session: Option<String>,
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for h in headers.get_all(axum::http::header::COOKIE) {
        let Ok(v) = h.to_str() else { continue };
        for part in v.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == name {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
}

/// The operator behind a request: a `Bearer` API token or a live session cookie.
pub async fn operator(app: &AppState, headers: &HeaderMap) -> Option<Operator> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let t = v.strip_prefix("Bearer ")?.trim();
        let user = app.store().token_user(&secret_hash(t)).await.ok()??;
        return Some(Operator {
            user,
            csrf: String::new(),
            session: None,
        });
    }
    let sid = cookie(headers, SESSION_COOKIE)?;
    let s = app
        .store()
        .session_get(&secret_hash(&sid), now())
        .await
        .ok()??;
    Some(Operator {
        user: s.user,
        csrf: s.csrf,
        session: Some(sid),
    })
}

/// Whether a state-changing browser request comes from our own pages: `Sec-Fetch-Site` (when
/// sent) is `same-origin` or `none`, and `Origin` (when sent) names the `Host` we were called
/// as.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(v) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if v != "same-origin" && v != "none" {
            return false;
        }
    }
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let o = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or("");
        return !host.is_empty() && o == host;
    }
    true
}

/// Constant-time comparison of two tokens.
pub fn token_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether the request came over TLS (then cookies get `Secure`).
pub fn is_https<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<ListenerInfo>()
        .map(|l| l.https)
        .unwrap_or(false)
}

/// The peer address as text ("?" when unknown).
pub fn peer<B>(req: &Request<B>) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "?".into())
}

/// A `Set-Cookie` value with the safety flags.
pub fn set_cookie(name: &str, value: &str, max_age: i64, https: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if https { "; Secure" } else { "" }
    )
}

type Failures = HashMap<String, (u32, i64)>;

fn failures() -> &'static Mutex<Failures> {
    static F: OnceLock<Mutex<Failures>> = OnceLock::new();
    F.get_or_init(Default::default)
}

/// Whether `key` (site + peer) may try to log in now.
pub fn login_allowed(key: &str, now: i64) -> bool {
    let map = failures().lock().unwrap_or_else(|p| p.into_inner());
    match map.get(key) {
        Some((n, since)) => *n < MAX_FAILURES || now - since > FAIL_WINDOW,
        None => true,
    }
}

/// Record a failed login of `key`.
pub fn login_failed(key: &str, now: i64) {
    let mut map = failures().lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, (_, since)| now - *since <= FAIL_WINDOW);
    let e = map.entry(key.to_string()).or_insert((0, now));
    e.0 += 1;
}

/// Forget the failures of `key` (after a good login).
pub fn login_succeeded(key: &str) {
    failures()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(key);
}

/// Write an audit entry (problems are logged, never fatal).
pub async fn audit(app: &AppState, user: &str, action: &str, target: &str, detail: &str) {
    tracing::info!(user, action, target, detail, "operator action");
    if let Err(e) = app
        .store()
        .audit_add(now(), user, action, target, detail)
        .await
    {
        tracing::warn!(error = %e, "cannot write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_roundtrip() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "garbage"));
    }

    #[test]
    fn origin_checks() {
        let mut h = HeaderMap::new();
        h.insert("host", "a.example:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "http://a.example:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.remove("origin");
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
    }

    #[test]
    fn rate_limit() {
        let k = "test-rate-limit-key";
        for _ in 0..MAX_FAILURES {
            assert!(login_allowed(k, 1000));
            login_failed(k, 1000);
        }
        assert!(!login_allowed(k, 1001));
        assert!(login_allowed(k, 1000 + FAIL_WINDOW + 1));
    }
}
