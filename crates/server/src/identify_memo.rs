//! Identification and settings of vendor-file requests, kept per request facts.
//!
//! [`vendors::identify`] asks every vendor module about a request (User-Agent patterns, file
//! name rules); a phone that polls asks the same question with the same facts every time. The
//! answer is a pure function of the path, the query string, the User-Agent and what the
//! inventory knows about the MAC (vendor and model), so it is kept under exactly those facts;
//! a different value of any of them is another entry. The settings the identity gets
//! ([`vendors::resolve_for`]) depend on the site snapshot as well, so the memo belongs to one
//! snapshot: a reload starts an empty one.
//!
//! Bounded by a number of entries; a full memo is emptied at once (phones that poll refill it
//! within one polling interval). Emptied as well when the server goes quiet
//! ([`crate::AppState::trim_caches`]).

use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, Mutex};

use autoprov_core::settings::Resolved;
use autoprov_core::vendors::{self, DeviceRequest, Identity, Known, Unrecognised};
use autoprov_core::Site;

/// Entries kept at most (~1 KB each).
pub const DEFAULT_CAPACITY: usize = 16_384;

/// An identified request: who asked for what, with the settings its file gets.
#[derive(Debug)]
pub struct Identified {
    pub identity: Identity,
    /// `identity` spelled out completely, for keys of caches that depend on all of it.
    pub key: String,
    pub settings: Resolved,
}

type Answer = Result<Arc<Identified>, Unrecognised>;

#[derive(Default)]
struct Inner {
    site: Option<Arc<Site>>,
    entries: HashMap<String, Answer>,
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct IdentifyMemo {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

impl Default for IdentifyMemo {
    fn default() -> Self {
        IdentifyMemo::with_capacity(DEFAULT_CAPACITY)
    }
}

impl IdentifyMemo {
    /// A memo of at most `capacity` entries (0: nothing is kept).
    pub fn with_capacity(capacity: usize) -> IdentifyMemo {
        IdentifyMemo {
            inner: Arc::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Identify `req` (whose raw query string is `raw_query`) and resolve its settings under
    /// `site`, or take both from an earlier request with the same facts.
    pub fn identify(
        &self,
        site: &Arc<Site>,
        req: &DeviceRequest,
        raw_query: &str,
        known: Option<&Known>,
    ) -> Answer {
        let key = memo_key(req, raw_query, known);
        {
            let inner = self.lock();
            if inner.site.as_ref().is_some_and(|s| Arc::ptr_eq(s, site)) {
                if let Some(answer) = inner.entries.get(&key) {
                    return answer.clone();
                }
            }
        }
        let answer = vendors::identify(req, known).map(|identity| {
            let settings = vendors::resolve_for(&site.config, &identity);
            Arc::new(Identified {
                key: format!("{identity:?}"),
                identity,
                settings,
            })
        });
        if self.capacity > 0 {
            let mut inner = self.lock();
            if !inner.site.as_ref().is_some_and(|s| Arc::ptr_eq(s, site)) {
                *inner = Inner {
                    site: Some(site.clone()),
                    ..Inner::default()
                };
            }
            if inner.entries.len() >= self.capacity {
                inner.entries = HashMap::new();
            }
            inner.entries.insert(key, answer.clone());
        }
        answer
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every entry.
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }
}

/// Every fact [`vendors::identify`] may look at, each one delimited so that no two
/// different sets of facts spell the same key.
fn memo_key(req: &DeviceRequest, raw_query: &str, known: Option<&Known>) -> String {
    fn put(out: &mut String, part: &str) {
        // Length-prefixed: parts may contain any character.
        out.push_str(itoa::Buffer::new().format(part.len()));
        out.push(':');
        out.push_str(part);
    }
    let mut key =
        String::with_capacity(req.path.len() + raw_query.len() + req.user_agent.len() + 64);
    put(&mut key, &req.path);
    put(&mut key, raw_query);
    put(&mut key, &req.user_agent);
    match known {
        None => key.push('-'),
        Some(k) => {
            key.push('+');
            match &k.vendor {
                Some(v) => put(&mut key, v),
                None => key.push('-'),
            }
            match &k.model {
                Some(m) => put(&mut key, m),
                None => key.push('-'),
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site from an empty configuration (the directory is only read while loading).
    fn site() -> Arc<Site> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("autoprov.toml"), "").unwrap();
        Arc::new(Site::load(dir.path()).unwrap())
    }

    fn request(path: &str, ua: &str) -> DeviceRequest {
        DeviceRequest {
            path: path.into(),
            query: Vec::new(),
            user_agent: ua.into(),
            peer_ip: "10.0.0.1".into(),
            client_cn: None,
        }
    }

    const YEALINK_UA: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";

    #[test]
    fn same_answer_as_identify_for_every_fact_combination() {
        let site = site();
        let memo = IdentifyMemo::default();
        let known = Known {
            vendor: Some("yealink".into()),
            model: Some("T46S".into()),
        };
        let cases = [
            (request("/001565aabbcc.cfg", YEALINK_UA), None),
            (request("/001565aabbcc.cfg", YEALINK_UA), Some(&known)),
            (request("/001565aabbcc.cfg", ""), None),
            (request("/001565aabbcc.cfg", ""), Some(&known)),
            (
                request(
                    "/snomD785.htm",
                    "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33)",
                ),
                None,
            ),
            (request("/nothing.txt", "curl/8"), None),
            (request("/", ""), None),
        ];
        // Twice: the second round answers from the memo.
        for round in 0..2 {
            for (req, known) in &cases {
                let got = memo.identify(&site, req, "", *known);
                let want = vendors::identify(req, *known);
                match (got, want) {
                    (Ok(g), Ok(w)) => {
                        assert_eq!(g.identity, w, "round {round}: {}", req.path);
                        assert_eq!(g.settings, vendors::resolve_for(&site.config, &w));
                        assert_eq!(g.key, format!("{w:?}"));
                    }
                    (Err(g), Err(w)) => assert_eq!(g, w, "round {round}: {}", req.path),
                    (g, w) => panic!("round {round}: {}: memo {g:?}, identify {w:?}", req.path),
                }
            }
        }
        assert_eq!(memo.len(), cases.len());
    }

    #[test]
    fn facts_are_not_confused_by_where_they_split() {
        let a = request("/a", "b");
        let b = request("/a", "");
        let known_a = Known {
            vendor: Some("x".into()),
            model: None,
        };
        let known_b = Known {
            vendor: None,
            model: Some("x".into()),
        };
        let keys = [
            memo_key(&a, "", None),
            memo_key(&b, "b", None),
            memo_key(&b, "", None),
            memo_key(&b, "", Some(&Known::default())),
            memo_key(&b, "", Some(&known_a)),
            memo_key(&b, "", Some(&known_b)),
        ];
        for (i, k) in keys.iter().enumerate() {
            for (j, l) in keys.iter().enumerate() {
                assert_eq!(i == j, k == l, "{k} vs {l}");
            }
        }
    }

    #[test]
    fn a_new_site_snapshot_or_a_full_memo_starts_over() {
        let memo = IdentifyMemo::with_capacity(2);
        let s1 = site();
        let r = |n: u32| request(&format!("/00156500000{n}.cfg"), YEALINK_UA);
        memo.identify(&s1, &r(1), "", None).unwrap();
        memo.identify(&s1, &r(2), "", None).unwrap();
        assert_eq!(memo.len(), 2);
        memo.identify(&s1, &r(3), "", None).unwrap();
        assert_eq!(memo.len(), 1, "full: emptied, then the new entry");
        let s2 = site();
        memo.identify(&s2, &r(3), "", None).unwrap();
        assert_eq!(memo.len(), 1);
        memo.clear();
        assert!(memo.is_empty());
        // Capacity 0 keeps nothing and still answers.
        let none = IdentifyMemo::with_capacity(0);
        assert!(none.identify(&s1, &r(1), "", None).is_ok());
        assert!(none.is_empty());
    }
}
