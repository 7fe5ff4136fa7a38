//! The check-sync / resync sender: SIP NOTIFYs that make phones re-read their configuration
//! (or reboot) now instead of at their next poll.
//!
//! [`run`] picks the targets from the inventory (one device, a filter, or all), chooses each
//! brand's `Event` (`autoprov_core::discovery::Brand::notify_event`), starts at most `rate`
//! NOTIFYs per second so a mass resync never becomes a boot storm, answers one 401/407 digest
//! challenge when credentials are configured, and records the outcome as a message in each
//! device's state. [`send`] is one NOTIFY transaction over UDP (RFC 3261 non-INVITE client:
//! retransmitted after 0.5, 1, 2, 4 s until a final answer or the timeout).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use autoprov_core::discovery::{generic_notify_event, normalize_mac, Brand, NotifyAction};
use autoprov_core::{DeviceState, Site};
use autoprov_store::Store;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::digest;
use super::message::Message;
use super::{hostport, token};

/// NOTIFY transactions in flight at once (sockets and memory stay bounded at any rate).
pub const MAX_IN_FLIGHT: usize = 256;
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// Which devices to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One device by its serial or MAC (any spelling).
    Device(String),
    /// Devices whose record contains every whitespace-separated term (case-insensitive; serial,
    /// IP, brand, type, phase, classes, environments).
    Filter(String),
    All,
    /// No inventory device: only the explicit address.
    None,
}

/// What to send and how fast.
#[derive(Debug, Clone)]
pub struct NotifyRequest {
    pub selection: Selection,
    /// Explicit address (`IP` or `IP:PORT`), instead of the device's last known IP.
    pub to: Option<String>,
    /// Brand to assume where the inventory does not tell.
    pub brand: Option<Brand>,
    pub action: NotifyAction,
    /// NOTIFYs started per second; `None` = `sip.notify_rate`.
    pub rate: Option<u32>,
}

/// How one NOTIFY went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Accepted { code: u16, reason: String },
    /// A final answer other than 2xx (after answering a challenge, if any).
    Refused { code: u16, reason: String },
    /// No final answer within the timeout.
    NoAnswer,
    /// Not sent, and why.
    Skipped(String),
    /// Could not be sent (e.g. the port is unreachable).
    Failed(String),
}

impl Outcome {
    pub fn is_accepted(&self) -> bool {
        matches!(self, Outcome::Accepted { .. })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Accepted { code, reason } => write!(f, "accepted ({code} {reason})"),
            Outcome::Refused { code, reason } => write!(f, "refused ({code} {reason})"),
            Outcome::NoAnswer => write!(f, "no answer"),
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// One target and what happened.
#[derive(Debug, Clone)]
pub struct Report {
    /// The device's serial, when it came from the inventory.
    pub sn: Option<String>,
    pub addr: Option<SocketAddr>,
    pub event: Option<String>,
    pub outcome: Outcome,
}

/// Why a notify run could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no device '{0}' in the inventory (list them with `autoprov devices`), or pass --to ADDRESS")]
    UnknownDevice(String),
    #[error("'{0}' is not an address: give IP or IP:PORT")]
    BadAddress(String),
    #[error("nothing to notify: pass --device, --filter, --all or --to")]
    NoTargets,
    #[error(transparent)]
    Store(#[from] autoprov_store::StoreError),
    #[error("cannot read sip.notify_password_file {path}: {source}")]
    PasswordFile {
        path: String,
        source: std::io::Error,
    },
}

/// Transport settings of one NOTIFY.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub timeout: Duration,
    pub credentials: Option<(String, String)>,
}

/// The digest credentials of `[sip]`, reading `notify_password_file` when set.
pub fn credentials(site: &Site) -> Result<Option<(String, String)>, NotifyError> {
    let sip = &site.config.sip;
    if sip.notify_user.is_empty() {
        return Ok(None);
    }
    let password = if sip.notify_password_file.is_empty() {
        sip.notify_password.clone()
    } else {
        let path = site
            .path(&sip.notify_password_file)
            .unwrap_or_else(|| site.dir.join(&sip.notify_password_file));
        let text = std::fs::read_to_string(&path).map_err(|source| NotifyError::PasswordFile {
            path: path.display().to_string(),
            source,
        })?;
        text.lines().next().unwrap_or_default().to_string()
    };
    Ok(Some((sip.notify_user.clone(), password)))
}

/// Parse `IP` or `IP:PORT` (IPv6 as `[::1]:5060`).
pub fn parse_target(s: &str, default_port: u16) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

/// The brand of an inventory device: its recorded vendor, else its MAC, else its type text.
fn device_brand(d: &DeviceState) -> Option<Brand> {
    d.vendor
        .as_deref()
        .and_then(Brand::from_id)
        .or_else(|| Brand::from_mac(&d.sn))
        .or_else(|| d.device.device_type.as_deref().and_then(Brand::from_hint))
}

/// The operators' filter (seed 003 semantics, shared with the device list: whole words,
/// case-insensitive, every term must match, `present`/`missing`), plus the phone's brand.
fn matches_filter(d: &DeviceState, filter: &str, now: i64, missing_after: u64) -> bool {
    let mut fields = autoprov_core::filter::device_fields(d);
    if let Some(b) = device_brand(d) {
        fields.push(b.id());
    }
    let missing = autoprov_core::filter::is_missing(d, now, missing_after);
    autoprov_core::filter::matches(filter, &fields, missing)
}

async fn find_device(store: &Store, key: &str) -> Result<Option<DeviceState>, NotifyError> {
    if let Some(d) = store.load(key).await? {
        return Ok(Some(d));
    }
    let Some(mac) = normalize_mac(key) else {
        return Ok(None);
    };
    if let Some(d) = store.load(&mac).await? {
        return Ok(Some(d));
    }
    Ok(store
        .list()
        .await?
        .into_iter()
        .find(|d| normalize_mac(&d.sn).as_deref() == Some(mac.as_str())))
}

/// Send the NOTIFYs a request asks for, throttled, and record each outcome in the device's
/// state. `progress` sees every report as it completes.
pub async fn run(
    site: &Site,
    store: &Store,
    app: Option<&crate::AppState>,
    req: &NotifyRequest,
    mut progress: impl FnMut(&Report),
) -> Result<Vec<Report>, NotifyError> {
    let sip = &site.config.sip;
    let port = sip.notify_port;
    let to = match &req.to {
        Some(s) => Some(parse_target(s, port).ok_or_else(|| NotifyError::BadAddress(s.clone()))?),
        None => None,
    };
    let devices: Vec<DeviceState> = match &req.selection {
        Selection::Device(key) => match find_device(store, key).await? {
            Some(d) => vec![d],
            None if to.is_some() => Vec::new(),
            None => return Err(NotifyError::UnknownDevice(key.clone())),
        },
        Selection::Filter(f) => store
            .list()
            .await?
            .into_iter()
            .filter(|d| {
                let now = crate::app::now();
                matches_filter(d, f, now, site.config.status.missing)
            })
            .collect(),
        Selection::All => store.list().await?,
        Selection::None => Vec::new(),
    };
    // (serial, address, brand)
    let mut targets: Vec<(Option<String>, Option<SocketAddr>, Option<Brand>)> = devices
        .iter()
        .map(|d| {
            let addr = to.or_else(|| d.device.ip.as_deref().and_then(|ip| parse_target(ip, port)));
            (Some(d.sn.clone()), addr, device_brand(d).or(req.brand))
        })
        .collect();
    if targets.is_empty() {
        match (&req.selection, to) {
            (Selection::Device(key), Some(addr)) => {
                targets.push((
                    normalize_mac(key).or(Some(key.clone())),
                    Some(addr),
                    req.brand,
                ));
            }
            (Selection::None, Some(addr)) => targets.push((None, Some(addr), req.brand)),
            (Selection::None, None) => return Err(NotifyError::NoTargets),
            _ => {}
        }
    }
    // A device named explicitly but unknown to the inventory is not recorded.
    let known: std::collections::HashSet<String> = devices.iter().map(|d| d.sn.clone()).collect();
    let opts = SendOptions {
        timeout: Duration::from_secs(sip.notify_timeout.max(1)),
        credentials: credentials(site)?,
    };
    let rate = req.rate.unwrap_or(sip.notify_rate).max(1);
    let logkeep = site.config.status.logkeep.min(i64::MAX as u64) as i64;
    let record = |r: Report| async {
        if let Some(sn) = r.sn.as_ref().filter(|sn| known.contains(*sn)) {
            record_outcome(store, app, sn, &r, req.action, logkeep).await?;
        }
        Ok::<Report, NotifyError>(r)
    };
    let mut reports = Vec::with_capacity(targets.len());
    let mut jobs: Vec<(Option<String>, SocketAddr, String)> = Vec::new();
    for (sn, addr, brand) in targets {
        let event = match brand {
            Some(b) => b.notify_event(req.action).map(str::to_string),
            None => Some(generic_notify_event(req.action).to_string()),
        };
        let skip = match (addr, &event) {
            (_, None) => Some(format!(
                "{} devices have no SIP NOTIFY; they poll for changes",
                brand.map(|b| b.id()).unwrap_or("these")
            )),
            (None, _) => Some("no known IP address (pass --to)".to_string()),
            _ => None,
        };
        match (skip, addr, event) {
            (None, Some(addr), Some(event)) => jobs.push((sn, addr, event)),
            (why, addr, event) => {
                let r = Report {
                    sn,
                    addr,
                    event,
                    outcome: Outcome::Skipped(why.unwrap_or_default()),
                };
                progress(&r);
                reports.push(record(r).await?);
            }
        }
    }
    // Each outcome is recorded as soon as it arrives, before the phone's own fetch usually
    // touches the same device state.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = tokio::spawn(send_throttled(jobs, rate, opts, tx));
    while let Some(r) = rx.recv().await {
        progress(&r);
        reports.push(record(r).await?);
    }
    let _ = sender.await;
    Ok(reports)
}

/// Add the outcome of a NOTIFY to a device's messages without losing it to a poll of the same
/// device in between: in the server (`app`) under the device's lock like a request; from
/// another process as a note the store merges into every load (see `Store::append_note`).
async fn record_outcome(
    store: &Store,
    app: Option<&crate::AppState>,
    sn: &str,
    r: &Report,
    action: NotifyAction,
    logkeep: i64,
) -> Result<(), NotifyError> {
    let now = crate::app::now();
    let msg = format!(
        "SIP NOTIFY {} to {}: {}",
        r.event.as_deref().unwrap_or(action.id()),
        r.addr.map(hostport).unwrap_or_else(|| "-".into()),
        r.outcome
    );
    let Some(app) = app else {
        // Another process (the CLI): appended without writing the state a running server
        // may hold (see `Store::append_note`).
        store.append_note(sn, now, &msg).await?;
        return Ok(());
    };
    let _held = app.lock_device(sn).await;
    let Some(mut st) = store.load(sn).await? else {
        return Ok(());
    };
    st.add_msg(&msg, now);
    st.prune_msgs(now, logkeep);
    store.save(&st).await?;
    Ok(())
}

/// Start one NOTIFY every `1/rate` seconds (at most [`MAX_IN_FLIGHT`] at once) and pass each
/// outcome to `out` as it completes.
async fn send_throttled(
    jobs: Vec<(Option<String>, SocketAddr, String)>,
    rate: u32,
    opts: SendOptions,
    out: tokio::sync::mpsc::UnboundedSender<Report>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    for (sn, addr, event) in jobs {
        ticker.tick().await;
        while set.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let opts = opts.clone();
        let out = out.clone();
        set.spawn(async move {
            let outcome = send(addr, &event, &opts).await;
            drop(permit);
            let _ = out.send(Report {
                sn,
                addr: Some(addr),
                event: Some(event),
                outcome,
            });
        });
    }
    while set.join_next().await.is_some() {}
}

/// One NOTIFY transaction to `addr` with this `Event`, answering one digest challenge when
/// credentials are given.
pub async fn send(addr: SocketAddr, event: &str, opts: &SendOptions) -> Outcome {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cannot open a UDP socket: {e}")),
    };
    if let Err(e) = sock.connect(addr).await {
        return Outcome::Failed(format!("cannot reach {addr}: {e}"));
    }
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let me = hostport(local);
    let uri = format!("sip:{}", hostport(addr));
    let call_id = format!(
        "{}@{}",
        token(),
        hostport(local)
            .rsplit_once(':')
            .map(|p| p.0)
            .unwrap_or("autoprov")
    );
    let from_tag = token();
    let deadline = Instant::now() + opts.timeout;
    let mut cseq = 1u32;
    let mut auth: Option<(&'static str, String)> = None;
    loop {
        let mut m = Message::request("NOTIFY", &uri);
        m.push(
            "Via",
            format!("SIP/2.0/UDP {me};branch=z9hG4bK{};rport", token()),
        )
        .push("Max-Forwards", "70")
        .push("From", format!("<sip:autoprov@{me}>;tag={from_tag}"))
        .push("To", format!("<{uri}>"))
        .push("Call-ID", call_id.as_str())
        .push("CSeq", format!("{cseq} NOTIFY"))
        .push("Contact", format!("<sip:autoprov@{me}>"))
        .push("Event", event)
        .push("Subscription-State", "terminated")
        .push(
            "User-Agent",
            format!("autoprov/{}", env!("CARGO_PKG_VERSION")),
        );
        if let Some((name, value)) = &auth {
            m.push(name, value.as_str());
        }
        let answer = match transaction(&sock, &m.to_bytes(), &call_id, cseq, deadline).await {
            Ok(Some(a)) => a,
            Ok(None) => return Outcome::NoAnswer,
            Err(e) => return Outcome::Failed(e),
        };
        let code = answer.status().unwrap_or(0);
        let reason = answer.reason().to_string();
        if (200..300).contains(&code) {
            return Outcome::Accepted { code, reason };
        }
        if (code == 401 || code == 407) && auth.is_none() {
            let (challenge_header, answer_header) = if code == 401 {
                ("WWW-Authenticate", "Authorization")
            } else {
                ("Proxy-Authenticate", "Proxy-Authorization")
            };
            let challenge = answer
                .headers_named(challenge_header)
                .find_map(digest::parse_challenge);
            if let (Some((user, password)), Some(ch)) = (&opts.credentials, challenge) {
                let value = digest::authorization(&ch, user, password, "NOTIFY", &uri, &token());
                auth = Some((answer_header, value));
                cseq += 1;
                continue;
            }
        }
        return Outcome::Refused { code, reason };
    }
}

/// Send `bytes`, retransmit until a final response with this Call-ID and CSeq arrives or the
/// deadline passes. `Ok(None)` = no final answer in time.
async fn transaction(
    sock: &UdpSocket,
    bytes: &[u8],
    call_id: &str,
    cseq: u32,
    deadline: Instant,
) -> Result<Option<Message>, String> {
    let unreachable = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            "port unreachable (nothing listens for SIP there)".to_string()
        } else {
            e.to_string()
        }
    };
    sock.send(bytes).await.map_err(unreachable)?;
    let mut interval = T1;
    let mut next = Instant::now() + interval;
    let mut retransmit = true;
    let mut buf = vec![0u8; 65536];
    loop {
        let wake = if retransmit {
            next.min(deadline)
        } else {
            deadline
        };
        match tokio::time::timeout_at(wake, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let Ok(m) = Message::parse(&buf[..n]) else {
                    continue;
                };
                let ours = m.header("Call-ID") == Some(call_id)
                    && m.cseq() == Some((cseq, "NOTIFY"))
                    && m.status().is_some();
                if !ours {
                    continue;
                }
                if m.status().is_some_and(|c| c >= 200) {
                    return Ok(Some(m));
                }
                retransmit = false; // provisional: the phone has it
            }
            Ok(Err(e)) => return Err(unreachable(e)),
            Err(_) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                sock.send(bytes).await.map_err(unreachable)?;
                interval = (interval * 2).min(T2);
                next = now + interval;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A phone that challenges once, then accepts when the answer is right.
    async fn phone(challenge: bool) -> (SocketAddr, tokio::task::JoinHandle<Vec<Message>>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok(Ok((n, src))) =
                    tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await
                else {
                    return got;
                };
                let m = Message::parse(&buf[..n]).unwrap();
                let authed = m.header("Authorization").is_some();
                let mut r = if challenge && !authed {
                    let mut r = Message::response(401, "Unauthorized");
                    r.push(
                        "WWW-Authenticate",
                        r#"Digest realm="phone", nonce="abc", qop="auth""#,
                    );
                    r
                } else {
                    Message::response(200, "OK")
                };
                for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
                    r.copy_from(&m, h);
                }
                sock.send_to(&r.to_bytes(), src).await.unwrap();
                got.push(m);
                if !challenge || authed {
                    return got;
                }
            }
        });
        (addr, h)
    }

    #[tokio::test]
    async fn plain_and_challenged() {
        let opts = SendOptions {
            timeout: Duration::from_secs(2),
            credentials: Some(("admin".into(), "secret".into())),
        };
        let (addr, h) = phone(false).await;
        let o = send(addr, "check-sync;reboot=false", &opts).await;
        assert!(o.is_accepted(), "{o}");
        let got = h.await.unwrap();
        assert_eq!(got[0].header("Event"), Some("check-sync;reboot=false"));
        assert_eq!(got[0].header("Content-Length"), Some("0"));

        let (addr, h) = phone(true).await;
        let o = send(addr, "check-sync", &opts).await;
        assert!(o.is_accepted(), "{o}");
        let got = h.await.unwrap();
        assert_eq!(got.len(), 2);
        let a = got[1].header("Authorization").unwrap();
        assert!(
            a.contains("username=\"admin\"") && a.contains("qop=auth"),
            "{a}"
        );
        assert_eq!(got[1].cseq(), Some((2, "NOTIFY")));

        let (addr, _h) = phone(true).await;
        let o = send(
            addr,
            "check-sync",
            &SendOptions {
                credentials: None,
                ..opts.clone()
            },
        )
        .await;
        assert_eq!(
            o,
            Outcome::Refused {
                code: 401,
                reason: "Unauthorized".into()
            }
        );
    }

    #[tokio::test]
    async fn silence_and_closed_ports() {
        let quiet = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let opts = SendOptions {
            timeout: Duration::from_millis(700),
            credentials: None,
        };
        let o = send(quiet.local_addr().unwrap(), "check-sync", &opts).await;
        assert_eq!(o, Outcome::NoAnswer);
        let mut buf = [0u8; 4096];
        // Sent once and retransmitted once within 700 ms.
        assert!(quiet.try_recv(&mut buf).is_ok());
        let closed = {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.local_addr().unwrap()
        };
        let o = send(closed, "check-sync", &opts).await;
        assert!(matches!(o, Outcome::Failed(_) | Outcome::NoAnswer), "{o}");
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("10.0.0.5", 5060),
            Some("10.0.0.5:5060".parse().unwrap())
        );
        assert_eq!(
            parse_target("10.0.0.5:5070", 5060),
            Some("10.0.0.5:5070".parse().unwrap())
        );
        assert_eq!(
            parse_target("[fd00::1]", 5060),
            Some("[fd00::1]:5060".parse().unwrap())
        );
        assert_eq!(parse_target("phone.example", 5060), None);
        let mut d = DeviceState::new("001565aabbcc", 0);
        d.device.ip = Some("172.16.0.9".into());
        assert!(matches_filter(&d, "yealink 172.16.", 10, 604800));
        assert!(!matches_filter(&d, "snom", 10, 604800));
        assert!(!matches_filter(&d, "172.1", 10, 604800), "whole words only");
        assert!(matches_filter(&d, "present", 10, 604800));
    }
}
