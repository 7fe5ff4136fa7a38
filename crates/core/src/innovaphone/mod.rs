//! The innovaphone update-script engine (a drop-in for the PHP Update Server V2, build 2033).
//!
//! [`plan_update`] turns one device request into the exact command script the reference would
//! send, the notes explaining each decision (the `# ...` lines that are also kept as device
//! messages), and the new device state. It does no I/O itself: snippet files, the master
//! device's `box_info.xml` and dynamic snippets are asked for through [`Ports`], so the same
//! function serves HTTP requests, `autoprov simulate` and the golden tests.
//!
//! Submodules: [`url`] (PHP-compatible encoding and URL rewrite), [`backup`] (backup body
//! normalisation and retention), [`boxinfo`] (the master's version string), [`php`] (the few
//! PHP behaviours the wire format depends on).

pub mod backup;
pub mod boxinfo;
mod certs;
pub mod engine;
pub mod php;
pub mod url;

pub use engine::{plan_reply, plan_update};

pub use crate::state::DeviceState;

/// What the engine needs to know about one HTTP request.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    /// Decoded query arguments in request order (`$_REQUEST`). A repeated key keeps its first
    /// position and its last value.
    pub args: Vec<(String, String)>,
    /// Whether the request came over TLS.
    pub https: bool,
    /// The local port the request arrived on (`SERVER_PORT`).
    pub server_port: Option<u16>,
    /// `Host` header as sent (may include a port).
    pub host: String,
    /// Request path (`PHP_SELF`), e.g. `/upd/update.php`.
    pub path: String,
    /// TCP peer address.
    pub peer_ip: String,
    /// `X-Forwarded-For` header, when present and sent by a trusted reverse proxy (the server
    /// drops the header from any other peer). Its presence means: the device came via a proxy.
    pub forwarded_for: Option<String>,
    /// Verified TLS client certificate, when one was presented.
    pub client_cert: Option<ClientCert>,
}

impl UpdateRequest {
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Build the argument list from a raw query string, PHP style (`+` is a space, a repeated
    /// key keeps its first position and takes the last value).
    pub fn parse_query(query: &str) -> Vec<(String, String)> {
        // One pass over the bytes finds each part's `=` and end, and whether anything in
        // it needs decoding (nearly nothing a device sends does).
        fn text(s: &str, encoded: bool) -> String {
            if encoded {
                url::form_decode(s)
            } else {
                s.to_string()
            }
        }
        let bytes = query.as_bytes();
        let parts = bytes.iter().filter(|&&b| b == b'&').count() + 1;
        let mut out: Vec<(String, String)> = Vec::with_capacity(parts);
        let mut start = 0;
        while start < bytes.len() {
            let mut eq: Option<usize> = None;
            let (mut key_encoded, mut value_encoded) = (false, false);
            let mut end = start;
            while end < bytes.len() && bytes[end] != b'&' {
                match bytes[end] {
                    b'=' if eq.is_none() => eq = Some(end),
                    b'+' | b'%' if eq.is_none() => key_encoded = true,
                    b'+' | b'%' => value_encoded = true,
                    _ => {}
                }
                end += 1;
            }
            // `&` and `=` are ASCII: the cuts fall on character boundaries.
            let (k, v) = match eq {
                Some(e) => (&query[start..e], &query[e + 1..end]),
                None => (&query[start..end], ""),
            };
            start = end + 1;
            if k.is_empty() {
                continue;
            }
            let k = text(k, key_encoded);
            let v = text(v, value_encoded);
            if k.is_empty() {
                continue;
            }
            if let Some(e) = out.iter_mut().find(|(ek, _)| *ek == k) {
                e.1 = v;
            } else {
                out.push((k, v));
            }
        }
        out
    }

    /// The base URL snippets and firmware paths are relative to (`dirname` of the script URL).
    pub fn base_url(&self) -> String {
        let mut url = self.script_url();
        if let Some(i) = url.rfind('/') {
            if i > url.find("://").map(|p| p + 2).unwrap_or(0) {
                url.truncate(i);
            }
        }
        url
    }

    /// `http(s)://HOST/PATH` as the reference builds it.
    pub fn script_url(&self) -> String {
        let scheme = if self.https { "https://" } else { "http://" };
        let mut out = String::with_capacity(scheme.len() + self.host.len() + self.path.len());
        out.push_str(scheme);
        out.push_str(&self.host);
        out.push_str(&self.path);
        out
    }
}

/// A TLS client certificate as seen by the listener (the web server's `SSL_CLIENT_S_DN_CN`,
/// `SSL_CLIENT_I_DN` and `SSL_CLIENT_VERIFY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    pub subject_cn: String,
    pub issuer_cn: String,
    /// The chain verified against the configured trust anchors.
    pub verified: bool,
    /// Why verification failed (e.g. `certificate expired`), when it did.
    pub verify_error: Option<String>,
}

/// A snippet file as the engine sees it.
#[derive(Debug, Clone)]
pub struct ScriptFile {
    /// Modification time (epoch seconds).
    pub mtime: i64,
    /// The content, or why it could not be read (the file exists but is unreadable). Shared:
    /// a cached snippet is handed to every request without copying it.
    pub content: Result<std::sync::Arc<str>, String>,
}

/// Result of asking for the master device's builds.
#[derive(Debug, Clone)]
pub struct MasterLookup {
    /// Lines describing how the answer was obtained (cache current, online, stale cache...).
    pub notes: Vec<String>,
    /// `(firmware, bootcode)` builds, or the reason none could be had.
    pub builds: Result<(String, String), String>,
}

impl Default for ScriptFile {
    fn default() -> Self {
        ScriptFile {
            mtime: 0,
            content: Ok("".into()),
        }
    }
}

/// Snippets computed per request (templates and the external hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicSnippets {
    pub pre: Vec<String>,
    pub post: Vec<String>,
    /// `false` suppresses the standard (file) snippets.
    pub send_standard: bool,
}

impl Default for DynamicSnippets {
    fn default() -> Self {
        DynamicSnippets {
            pre: Vec::new(),
            post: Vec::new(),
            send_standard: true,
        }
    }
}

/// The outside world as the engine needs it. Implemented by the server (files, HTTP, hooks)
/// and by tests.
pub trait Ports {
    /// The snippet at a site-relative path (`scripts/update-all-default.txt`), or `None` when
    /// it does not exist.
    fn script(&mut self, rel_path: &str) -> Option<ScriptFile>;
    /// The master device's current builds (called only when a build comes from the master).
    fn master(&mut self) -> MasterLookup;
    /// Dynamic snippets for the device state as it stands at delivery time.
    fn dynamic(&mut self, state: &DeviceState) -> Result<DynamicSnippets, String>;
    /// Whether a site-relative file exists (certificate roll-out files).
    fn file_exists(&mut self, rel_path: &str) -> bool;
    /// The bytes of a site-relative file (a signed certificate, a CA certificate), or `None`
    /// when it does not exist or cannot be read.
    fn read_file(&mut self, rel_path: &str) -> Option<Vec<u8>>;
    /// The files directly in the site-relative folder `dir` whose names match the shell
    /// pattern `pattern` (`*`, `?`, `[...]`; see [`glob_match`]), as site-relative paths
    /// `dir/name`, sorted by name (the reference's `glob`).
    fn list_files(&mut self, dir: &str, pattern: &str) -> Vec<String>;
    /// The name a reverse DNS lookup gives for `ip` (the `{rdns}` CSR placeholder), if any.
    fn reverse_dns(&mut self, ip: &str) -> Option<String>;
}

/// Shell-style pattern match of a file name: `*` any run, `?` one character, `[abc]`/`[a-z]`
/// one of a set (`[!...]` or `[^...]` negated); everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // Returns (matched, length of the class in the pattern including brackets).
        let mut i = 1;
        let negate = matches!(p.get(1), Some('!') | Some('^'));
        if negate {
            i += 1;
        }
        let start = i;
        let mut found = false;
        while i < p.len() {
            if p[i] == ']' && i > start {
                return Some((found != negate, i + 1));
            }
            if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                if p[i] <= c && c <= p[i + 2] {
                    found = true;
                }
                i += 3;
            } else {
                if p[i] == c {
                    found = true;
                }
                i += 1;
            }
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match (n.first(), class(p, n.first().copied().unwrap_or('\0'))) {
                (Some(_), Some((true, len))) => go(&p[len..], &n[1..]),
                (Some(_), Some((false, _))) => false,
                (first, None) => first == Some(&'[') && go(&p[1..], &n[1..]),
                (None, _) => false,
            },
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// What the engine decided for one request.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The response body, CRLF line ends.
    pub body: String,
    /// The explanations (`# ...` notes) in order, without the `# ` prefix.
    pub notes: Vec<String>,
    /// The device state to store, when state tracking is on and the reference would store it.
    pub state: Option<DeviceState>,
    /// Set when the request could not be served as asked (the reference's "bailout"); the body
    /// says why. HTTP status stays 200 as with the reference, devices only read the body.
    pub error: Option<String>,
    /// Site-relative files to delete (a finished or abandoned CSR of this device), which the
    /// caller removes after storing the state. Always inside `customcerts.dir`.
    pub remove_files: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parse spelled out: split at `&`, then at the first `=`, decode both, skip empty
    /// keys, a repeated key keeps its place and takes the last value.
    fn naive(query: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (k, v) = (url::form_decode(k), url::form_decode(v));
            if k.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(ek, _)| *ek == k) {
                Some(e) => e.1 = v,
                None => out.push((k, v)),
            }
        }
        out
    }

    #[test]
    fn parse_query_is_php_like() {
        for q in [
            "",
            "&",
            "&&a=1&&",
            "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5",
            "a=1&b=2&a=3",
            "a&b=&=c&d==e",
            "k%20ey=v+a%2Bl%26&x+y=%E4%F6",
            "a=%zz&b=%&c=%4",
            "CHECK=0123456789abcdef&ü=ö&emoji=😀",
            "%3D=1&a%26b=2",
            "=&=x",
        ] {
            assert_eq!(UpdateRequest::parse_query(q), naive(q), "{q}");
        }
        assert_eq!(
            UpdateRequest::parse_query("a=1&b=x+y&a=3"),
            vec![("a".into(), "3".into()), ("b".into(), "x y".into())]
        );
    }
}
