//! The master device lookup: which firmware and boot code builds devices should run, read
//! from the master's `box_info.xml` with the reference's cache semantics.
//!
//! Order (protocol §3): a current cache file (younger than `master.expire`) → the master
//! online (with `master.timeout`, the answer is cached atomically) → the stale cache → give up.
//! Every step leaves a note for the script, worded as the reference prints it.
//!
//! The lookup is synchronous (the engine's `Ports` are) and does its network I/O on a tokio
//! runtime handle; call it from a blocking thread. It does not decide which build a device
//! gets: that is the engine's job.

use std::path::PathBuf;
use std::time::Duration;

use autoprov_core::innovaphone::boxinfo::{parse_box_info, BoxInfo};
use autoprov_core::innovaphone::MasterLookup;
use autoprov_core::Site;

use crate::app::{wait_on, MasterCache};
use crate::fsutil::{atomic_write, decode_text, mtime_secs};

/// Seconds to wait for the master when `master.timeout` is 0.
pub const DEFAULT_TIMEOUT: u64 = 5;

/// Look the master's builds up (see the module docs).
pub fn lookup(
    site: &Site,
    runtime: &tokio::runtime::Handle,
    http: &reqwest::Client,
    cache: &MasterCache,
    now: i64,
) -> MasterLookup {
    // One lookup at a time: a second request waiting here finds the cache fresh afterwards.
    let _guard = cache.lock.lock().unwrap_or_else(|p| p.into_inner());
    let cfg = &site.config.master;
    let mut notes = Vec::new();
    let cache_name = cfg.cache.as_str();
    let cache_path = site.path(cache_name);

    let cached = if cache_is_current(cache_path.as_ref(), cfg.expire, now) {
        notes.push("firmware build info cache is current".to_string());
        read_cache(cache_path.as_ref(), cache_name)
    } else {
        Err("cache not current".to_string())
    };
    let info = match cached {
        Ok(info) => Ok(info),
        Err(reason) => {
            notes.push(format!(
                "failed to use cached data ({reason}), retrieving info online"
            ));
            match fetch_online(site, runtime, http) {
                Ok((info, xml)) => {
                    write_cache(cache_path.as_ref(), cache_name, &xml);
                    Ok(info)
                }
                Err(error) => {
                    tracing::warn!(%error, "master device lookup failed, using the cache");
                    notes.push(format!("cannot get PBX info: {error}, reading cache"));
                    read_cache(cache_path.as_ref(), cache_name)
                        .map_err(|e| format!("cannot get cached PBX info: {e}"))
                }
            }
        }
    };
    MasterLookup {
        notes,
        builds: info.map(|i| (i.prot, i.boot)),
    }
}

/// Whether [`lookup`] answers without waiting for the network: the info source is not a URL,
/// or the cache of its answer is current.
pub fn answers_at_once(site: &Site, now: i64) -> bool {
    let cfg = &site.config.master;
    !cfg.info.contains("://") || cache_is_current(site.path(&cfg.cache).as_ref(), cfg.expire, now)
}

fn cache_is_current(path: Option<&PathBuf>, expire: u64, now: i64) -> bool {
    let Some(path) = path else { return false };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            let age = now - mtime_secs(&meta);
            age < i64::try_from(expire).unwrap_or(i64::MAX)
        }
        _ => false,
    }
}

fn read_cache(path: Option<&PathBuf>, name: &str) -> Result<BoxInfo, String> {
    let path = path.ok_or_else(|| format!("cannot access {name}"))?;
    let bytes = std::fs::read(path).map_err(|_| format!("cannot access {name}"))?;
    parse_box_info(&decode_text(bytes), name)
}

fn write_cache(path: Option<&PathBuf>, name: &str, xml: &[u8]) {
    match path {
        Some(p) => {
            if let Err(e) = atomic_write(p, xml) {
                tracing::warn!(cache = name, error = %e, "cannot write the master info cache");
            }
        }
        None => tracing::warn!(cache = name, "master.cache is not a path inside the site"),
    }
}

/// GET `master.info` (or read it, when it is a site-relative file), returning the parsed
/// builds and the raw document for the cache.
fn fetch_online(
    site: &Site,
    runtime: &tokio::runtime::Handle,
    http: &reqwest::Client,
) -> Result<(BoxInfo, Vec<u8>), String> {
    let cfg = &site.config.master;
    let url = cfg.info.as_str();
    let cannot = || format!("cannot access {url}");
    let body = if url.contains("://") {
        let secs = if cfg.timeout == 0 {
            DEFAULT_TIMEOUT
        } else {
            cfg.timeout
        };
        let timeout = Duration::from_secs(secs);
        let (http, target) = (http.clone(), url.to_string());
        let fut = async move {
            let get = async {
                let resp = http.get(&target).timeout(timeout).send().await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                resp.bytes().await.ok()
            };
            // The outer timeout also covers a body that trickles in forever.
            tokio::time::timeout(timeout, get).await.ok().flatten()
        };
        wait_on(runtime, fut).flatten().ok_or_else(cannot)?.to_vec()
    } else {
        let path = site.path(url).ok_or_else(cannot)?;
        std::fs::read(path).map_err(|_| cannot())?
    };
    let info = parse_box_info(&decode_text(body.clone()), url)?;
    Ok((info, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    const GOOD: &str = r#"<info><sys version="IP6010[13r2 dvl [137640]], Bootcode[137641], Hardware[108]"/></info>"#;

    fn site(dir: &std::path::Path, info: &str, timeout: u64) -> Site {
        let mut config = autoprov_core::SiteConfig::default();
        config.master.info = info.to_string();
        config.master.timeout = timeout;
        Site {
            dir: dir.to_path_buf(),
            config,
        }
    }

    /// A one-shot HTTP server answering every request with `body`.
    fn serve_once(body: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
            }
        });
        format!("http://{addr}/CMD0/box_info.xml")
    }

    fn run(site: &Site, cache: &MasterCache) -> MasterLookup {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let http = reqwest::Client::new();
        let r = lookup(site, &handle, &http, cache, crate::app::now());
        rt.shutdown_background();
        r
    }

    #[test]
    fn online_then_cache_current() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path(), &serve_once(GOOD), 5);
        let cache = MasterCache::default();
        let first = run(&s, &cache);
        assert_eq!(first.builds, Ok(("137640".into(), "137641".into())));
        assert_eq!(
            first.notes,
            vec!["failed to use cached data (cache not current), retrieving info online"]
        );
        assert!(t.path().join("cache/master-info.xml").is_file());
        let second = run(&s, &cache);
        assert_eq!(second.notes, vec!["firmware build info cache is current"]);
        assert_eq!(second.builds, Ok(("137640".into(), "137641".into())));
    }

    #[test]
    fn unreachable_master_falls_back_to_stale_cache() {
        let t = tempfile::tempdir().unwrap();
        let cache_file = t.path().join("cache/master-info.xml");
        std::fs::create_dir_all(cache_file.parent().unwrap()).unwrap();
        std::fs::write(&cache_file, GOOD).unwrap();
        let mut s = site(t.path(), "http://127.0.0.1:1/CMD0/box_info.xml", 2);
        s.config.master.expire = 0; // always stale
        let r = run(&s, &MasterCache::default());
        assert_eq!(r.builds, Ok(("137640".into(), "137641".into())));
        assert_eq!(
            r.notes[1],
            "cannot get PBX info: cannot access http://127.0.0.1:1/CMD0/box_info.xml, reading cache"
        );
    }

    #[test]
    fn no_master_and_no_cache_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path(), "http://127.0.0.1:1/x", 2);
        let r = run(&s, &MasterCache::default());
        assert_eq!(
            r.builds,
            Err("cannot get cached PBX info: cannot access cache/master-info.xml".to_string())
        );
    }

    #[test]
    fn unparsable_answer_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path(), &serve_once("<info/>"), 2);
        let r = run(&s, &MasterCache::default());
        assert_eq!(
            r.notes[1],
            "cannot get PBX info: no <sys> tag in PBX info, reading cache"
        );
        assert!(!t.path().join("cache/master-info.xml").exists());
    }

    #[test]
    fn silent_master_does_not_hang_past_the_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // accept and never answer
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path(), &format!("http://{addr}/CMD0/box_info.xml"), 1);
        let started = Instant::now();
        let r = run(&s, &MasterCache::default());
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
        assert!(r.builds.is_err());
        assert!(r.notes[1].starts_with("cannot get PBX info: cannot access"));
    }
}
