//! The SIP plug-and-play responder.
//!
//! A booting phone sends `SUBSCRIBE sip:MAC…@224.0.1.75` with `Event: ua-profile` (multicast,
//! or unicast when configured). The responder answers `200 OK`, then sends a `NOTIFY` whose
//! `application/url` body is the provisioning URL for the phone's brand (from the MAC's OUI, the
//! `Event` vendor or the User-Agent), and records the phone in the inventory ("seen via SIP
//! PnP"). Everything else — malformed, truncated, oversized datagrams, other methods, other
//! events, SUBSCRIBEs without a MAC — is dropped, counted in [`PnpStats`] and logged at a
//! bounded rate.
//!
//! Bounded by construction: one fixed receive buffer, at most [`MAX_TRACKED`] remembered
//! transactions, at most [`MAX_PENDING`] NOTIFYs awaiting an answer, a token bucket of
//! `sip.max_per_second` SUBSCRIBEs, and a bounded queue towards the device database (records
//! that do not fit are skipped, never queued without limit).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoprov_core::config::Sip;
use autoprov_core::discovery::{expand_pnp_url, Brand};
use autoprov_core::DeviceState;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::message::{param, Message};
use super::{hostport, local_ip_towards, mac_from_uri, token};
use crate::app::AppState;
use crate::discovery::DiscoveryError;

/// The SIP plug-and-play multicast group.
pub const PNP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 1, 75);
/// Answered SUBSCRIBEs remembered (to answer retransmissions without a second NOTIFY).
pub const MAX_TRACKED: usize = 4096;
/// NOTIFYs awaiting the phone's answer (retransmitted until then).
pub const MAX_PENDING: usize = 1024;
/// How long an answered SUBSCRIBE is remembered (RFC 3261 Timer F).
const TRACK_FOR: Duration = Duration::from_secs(32);
/// A phone seen again within this time is not written to the database again.
const RECORD_EVERY: Duration = Duration::from_secs(10);
/// NOTIFY retransmissions (after 0.5, 1, 2, 4 s).
const NOTIFY_RETRIES: u8 = 4;
const T1: Duration = Duration::from_millis(500);

/// Counters of the responder, readable while it runs.
#[derive(Debug, Default)]
pub struct PnpStats {
    pub received: AtomicU64,
    /// Datagrams that are not SIP or not complete (too large, truncated, bad syntax).
    pub malformed: AtomicU64,
    /// Well-formed SIP that is not a plug-and-play SUBSCRIBE (other methods, other events, no
    /// MAC, responses nobody waits for).
    pub ignored: AtomicU64,
    /// SUBSCRIBEs dropped because more than `max_per_second` arrived.
    pub rate_limited: AtomicU64,
    /// SUBSCRIBEs answered with 200 OK (retransmissions included).
    pub answered: AtomicU64,
    pub notifies_sent: AtomicU64,
    /// NOTIFYs the phone answered (any final response).
    pub notifies_answered: AtomicU64,
    /// Inventory records skipped because the database queue was full.
    pub records_skipped: AtomicU64,
    /// Entries currently held in the responder's tables (a gauge).
    pub tracked: AtomicU64,
}

/// What the responder answers with.
#[derive(Debug, Clone)]
pub struct PnpSettings {
    /// The provisioning root URL (`{base}` in templates).
    pub base_url: String,
    /// Per-brand templates overriding [`Brand::default_pnp_url`].
    pub pnp_urls: BTreeMap<String, String>,
    pub max_per_second: u32,
    /// Seconds device messages are kept (`status.logkeep`).
    pub logkeep: i64,
    /// Record phones in the inventory (`[provisioning] inventory`).
    pub record: bool,
}

impl PnpSettings {
    pub fn new(sip: &Sip, base_url: &str, logkeep: u64) -> PnpSettings {
        PnpSettings {
            base_url: base_url.to_string(),
            pnp_urls: sip.pnp_urls.clone(),
            max_per_second: sip.max_per_second.max(1),
            logkeep: logkeep.min(i64::MAX as u64) as i64,
            record: true,
        }
    }

    /// The URL a phone of this brand is given.
    pub fn url_for(&self, brand: Option<Brand>) -> String {
        let template = brand
            .and_then(|b| {
                self.pnp_urls
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(b.id()))
                    .map(|(_, v)| v.as_str())
                    .or(Some(b.default_pnp_url()))
            })
            .unwrap_or("{base}/");
        expand_pnp_url(template, &self.base_url)
    }
}

/// A bound responder socket, not yet running.
pub struct PnpResponder {
    socket: UdpSocket,
    local: SocketAddr,
    stats: Arc<PnpStats>,
}

/// Read an interface's index from sysfs (Linux).
fn ifindex(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Bind `sip.listen` and join 224.0.1.75 on `sip.interfaces` when `sip.multicast` is set.
/// Must be called inside a tokio runtime.
pub fn bind(sip: &Sip) -> Result<PnpResponder, DiscoveryError> {
    use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
    let addr: SocketAddr = sip.listen.parse().map_err(|_| DiscoveryError::Config {
        what: "sip.listen",
        message: format!("'{}' is not ADDR:PORT", sip.listen),
    })?;
    let io = |source: std::io::Error| DiscoveryError::Bind {
        what: "SIP plug-and-play",
        addr,
        source,
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
    sock.set_reuse_address(true).map_err(io)?;
    sock.set_nonblocking(true).map_err(io)?;
    sock.bind(&addr.into()).map_err(io)?;
    if sip.multicast {
        let joins: Vec<String> = if sip.interfaces.is_empty() {
            vec!["0.0.0.0".into()]
        } else {
            sip.interfaces.clone()
        };
        for iface in &joins {
            let how = match iface.parse::<Ipv4Addr>() {
                Ok(a) => InterfaceIndexOrAddress::Address(a),
                Err(_) => match ifindex(iface) {
                    Some(i) => InterfaceIndexOrAddress::Index(i),
                    None => {
                        return Err(DiscoveryError::Config {
                            what: "sip.interfaces",
                            message: format!("there is no network interface '{iface}'"),
                        })
                    }
                },
            };
            sock.join_multicast_v4_n(&PNP_GROUP, &how)
                .map_err(|source| DiscoveryError::Multicast {
                    interface: iface.clone(),
                    source,
                })?;
        }
    }
    let socket = UdpSocket::from_std(sock.into()).map_err(io)?;
    let local = socket.local_addr().map_err(io)?;
    Ok(PnpResponder {
        socket,
        local,
        stats: Arc::new(PnpStats::default()),
    })
}

impl PnpResponder {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> Arc<PnpStats> {
        self.stats.clone()
    }

    /// Answer plug-and-play SUBSCRIBEs until `shutdown` completes.
    pub async fn run(
        self,
        state: AppState,
        settings: PnpSettings,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let (tx, rx) = mpsc::channel::<Seen>(256);
        let recorder = tokio::spawn(record_loop(state, rx, settings.logkeep));
        tracing::info!(local = %self.local, "SIP plug-and-play responder running");
        let mut core = Core::new(settings, self.stats.clone(), self.local, tx);
        let mut buf = vec![0u8; 65536];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, src)) => {
                        for (bytes, dest) in core.handle(&buf[..n], src, Instant::now()) {
                            if let Err(e) = self.socket.send_to(&bytes, dest).await {
                                tracing::debug!(%dest, error = %e, "cannot send SIP message");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "SIP receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = tick.tick() => {
                    for (bytes, dest) in core.retransmissions(Instant::now()) {
                        let _ = self.socket.send_to(&bytes, dest).await;
                    }
                }
            }
        }
        drop(core);
        let _ = recorder.await;
        tracing::info!(local = %self.local, "SIP plug-and-play responder stopped");
    }
}

/// A phone to record in the inventory.
#[derive(Debug)]
struct Seen {
    mac: String,
    src: SocketAddr,
    brand: Option<Brand>,
    model: Option<String>,
    version: Option<String>,
    url: String,
}

struct Answered {
    at: Instant,
    ok: Vec<u8>,
}

struct Pending {
    bytes: Vec<u8>,
    dest: SocketAddr,
    next: Instant,
    interval: Duration,
    left: u8,
}

/// Token bucket.
struct Bucket {
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Logs dropped traffic at most once per interval, with the number suppressed in between.
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    fn note(&mut self, now: Instant, src: SocketAddr, why: &str) {
        tracing::debug!(%src, why, "SIP datagram dropped");
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(60) => self.suppressed += 1,
            _ => {
                tracing::warn!(
                    %src,
                    why,
                    earlier = self.suppressed,
                    "dropped a SIP datagram that is not a plug-and-play SUBSCRIBE \
                     (further drops are logged once a minute; AUTOPROV_LOG=debug shows each)"
                );
                self.last = Some(now);
                self.suppressed = 0;
            }
        }
    }
}

/// The responder's state machine, free of I/O: datagram in, datagrams out.
struct Core {
    settings: PnpSettings,
    stats: Arc<PnpStats>,
    local: SocketAddr,
    records: mpsc::Sender<Seen>,
    bucket: Bucket,
    answered: HashMap<(String, u32), Answered>,
    pending: HashMap<(String, u32), Pending>,
    recorded: HashMap<String, Instant>,
    cseq: u32,
    log: LogLimit,
}

type Out = Vec<(Vec<u8>, SocketAddr)>;

impl Core {
    fn new(
        settings: PnpSettings,
        stats: Arc<PnpStats>,
        local: SocketAddr,
        records: mpsc::Sender<Seen>,
    ) -> Core {
        let per_second = f64::from(settings.max_per_second);
        Core {
            settings,
            stats,
            local,
            records,
            bucket: Bucket {
                tokens: per_second,
                per_second,
                last: Instant::now(),
            },
            answered: HashMap::new(),
            pending: HashMap::new(),
            recorded: HashMap::new(),
            cseq: 0,
            log: LogLimit {
                last: None,
                suppressed: 0,
            },
        }
    }

    fn update_gauge(&self) {
        let n = self.answered.len() + self.pending.len() + self.recorded.len();
        self.stats.tracked.store(n as u64, Ordering::Relaxed);
    }

    fn drop_ignored(&mut self, now: Instant, src: SocketAddr, why: &str) -> Out {
        self.stats.ignored.fetch_add(1, Ordering::Relaxed);
        self.log.note(now, src, why);
        Vec::new()
    }

    fn handle(&mut self, datagram: &[u8], src: SocketAddr, now: Instant) -> Out {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if datagram.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return Vec::new(); // keep-alive
        }
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                self.log.note(now, src, &e.to_string());
                return Vec::new();
            }
        };
        let out = if msg.status().is_some() {
            self.on_response(&msg, src, now)
        } else {
            self.on_request(&msg, src, now)
        };
        self.update_gauge();
        out
    }

    fn on_response(&mut self, msg: &Message, src: SocketAddr, now: Instant) -> Out {
        let key = match (msg.header("Call-ID"), msg.cseq()) {
            (Some(id), Some((n, "NOTIFY"))) => (id.to_string(), n),
            _ => return self.drop_ignored(now, src, "a response that is not to our NOTIFY"),
        };
        if msg.status().is_some_and(|c| c >= 200) {
            if self.pending.remove(&key).is_some() {
                self.stats.notifies_answered.fetch_add(1, Ordering::Relaxed);
                if msg.status() != Some(200) {
                    tracing::info!(%src, status = msg.status(), reason = msg.reason(), "phone refused the plug-and-play NOTIFY");
                }
            }
        } else if let Some(p) = self.pending.get_mut(&key) {
            // Provisional: the phone has it; stop retransmitting, keep waiting for the final.
            p.left = 0;
        }
        Vec::new()
    }

    fn on_request(&mut self, msg: &Message, src: SocketAddr, now: Instant) -> Out {
        if msg.method() != Some("SUBSCRIBE") {
            return self.drop_ignored(now, src, "not a SUBSCRIBE");
        }
        let event = msg.header("Event").unwrap_or_default();
        let package = event.split(';').next().unwrap_or_default().trim();
        if !package.eq_ignore_ascii_case("ua-profile") {
            return self.drop_ignored(now, src, "SUBSCRIBE for an event other than ua-profile");
        }
        let (Some(call_id), Some((cseq, _)), Some(from), Some(to), Some(_via)) = (
            msg.header("Call-ID"),
            msg.cseq(),
            msg.header("From"),
            msg.header("To"),
            msg.header("Via"),
        ) else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            self.log
                .note(now, src, "SUBSCRIBE without Call-ID, CSeq, From, To or Via");
            return Vec::new();
        };
        let key = (call_id.to_string(), cseq);
        if let Some(a) = self.answered.get(&key) {
            // A retransmission: the same answer again, no second NOTIFY.
            self.stats.answered.fetch_add(1, Ordering::Relaxed);
            return vec![(a.ok.clone(), src)];
        }
        let mac = msg
            .uri()
            .and_then(mac_from_uri)
            .or_else(|| mac_from_uri(from))
            .or_else(|| mac_from_uri(to));
        let Some(mac) = mac else {
            return self.drop_ignored(now, src, "ua-profile SUBSCRIBE without a MAC in its URIs");
        };
        if !self.bucket.take(now) {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.log.note(
                now,
                src,
                "more plug-and-play SUBSCRIBEs than sip.max_per_second",
            );
            return Vec::new();
        }
        let vendor = param(event, "vendor").unwrap_or_default();
        let model = param(event, "model").filter(|m| !m.is_empty());
        let version = param(event, "version").filter(|v| !v.is_empty());
        let ua = msg.header("User-Agent").unwrap_or_default();
        let brand = Brand::identify(Some(&mac), &[vendor, ua, model.unwrap_or_default()]);
        let url = self.settings.url_for(brand);

        let local_ip = match self.local.ip() {
            ip if ip.is_unspecified() => local_ip_towards(src.ip()).unwrap_or(ip),
            ip => ip,
        };
        let me = hostport(SocketAddr::new(local_ip, self.local.port()));
        let to_tag = token();

        let mut ok = Message::response(200, "OK");
        ok.copy_from(msg, "Via")
            .push("From", from)
            .push("To", with_tag(to, &to_tag))
            .push("Call-ID", call_id)
            .push("CSeq", msg.header("CSeq").unwrap_or_default())
            .push("Contact", format!("<sip:{me}>"))
            .push("Expires", "0")
            .push("User-Agent", user_agent());
        let ok = ok.to_bytes();

        self.cseq = self.cseq.wrapping_add(1).max(1);
        let accept = msg
            .header("Accept")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let content_type =
            if accept.contains("application/x-gs-ucm-url") && !accept.contains("application/url") {
                "application/x-gs-ucm-url"
            } else {
                "application/url"
            };
        let mut notify = Message::request("NOTIFY", &format!("sip:{}", hostport(src)));
        notify
            .push(
                "Via",
                format!("SIP/2.0/UDP {me};branch=z9hG4bK{};rport", token()),
            )
            .push("Max-Forwards", "20")
            .push("From", with_tag(to, &to_tag))
            .push("To", from)
            .push("Call-ID", call_id)
            .push("CSeq", format!("{} NOTIFY", self.cseq))
            .push("Contact", format!("<sip:{me}>"))
            .push("Event", event)
            .push("Subscription-State", "terminated;reason=timeout")
            .push("Content-Type", content_type)
            .push("User-Agent", user_agent());
        notify.body = url.clone().into_bytes();
        let notify = notify.to_bytes();

        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        self.stats.notifies_sent.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%src, %mac, brand = brand.map(|b| b.id()), model, %url, "plug-and-play: sent the provisioning URL");

        purge(&mut self.answered, MAX_TRACKED, |a| {
            now.duration_since(a.at) > TRACK_FOR
        });
        if self.answered.len() < MAX_TRACKED {
            self.answered.insert(
                key,
                Answered {
                    at: now,
                    ok: ok.clone(),
                },
            );
        }
        purge(&mut self.pending, MAX_PENDING, |p| {
            p.left == 0 && now > p.next
        });
        if self.pending.len() < MAX_PENDING {
            self.pending.insert(
                (call_id.to_string(), self.cseq),
                Pending {
                    bytes: notify.clone(),
                    dest: src,
                    next: now + T1,
                    interval: T1,
                    left: NOTIFY_RETRIES,
                },
            );
        }
        self.record(now, mac, src, brand, model, version, &url);
        vec![(ok, src), (notify, src)]
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        now: Instant,
        mac: String,
        src: SocketAddr,
        brand: Option<Brand>,
        model: Option<&str>,
        version: Option<&str>,
        url: &str,
    ) {
        if !self.settings.record
            || self
                .recorded
                .get(&mac)
                .is_some_and(|t| now.duration_since(*t) < RECORD_EVERY)
        {
            return;
        }
        purge(&mut self.recorded, MAX_TRACKED, |t| {
            now.duration_since(*t) >= RECORD_EVERY
        });
        if self.recorded.len() >= MAX_TRACKED {
            self.stats.records_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seen = Seen {
            mac: mac.clone(),
            src,
            brand,
            model: model.map(str::to_string),
            version: version.map(str::to_string),
            url: url.to_string(),
        };
        match self.records.try_send(seen) {
            Ok(()) => {
                self.recorded.insert(mac, now);
            }
            Err(_) => {
                self.stats.records_skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn retransmissions(&mut self, now: Instant) -> Out {
        let mut out = Vec::new();
        self.pending.retain(|_, p| {
            if now < p.next {
                return true;
            }
            if p.left == 0 {
                return false; // gave up (or got a provisional answer and waited long enough)
            }
            out.push((p.bytes.clone(), p.dest));
            p.left -= 1;
            p.interval = (p.interval * 2).min(Duration::from_secs(4));
            p.next = now + p.interval;
            true
        });
        self.update_gauge();
        out
    }
}

/// Drop entries matching `expired` once the map is full.
fn purge<K, V>(map: &mut HashMap<K, V>, cap: usize, expired: impl Fn(&V) -> bool) {
    if map.len() >= cap {
        map.retain(|_, v| !expired(v));
    }
}

fn with_tag(value: &str, tag: &str) -> String {
    if param(value, "tag").is_some() {
        value.to_string()
    } else {
        format!("{value};tag={tag}")
    }
}

fn user_agent() -> String {
    format!("autoprov/{}", env!("CARGO_PKG_VERSION"))
}

/// Write plug-and-play sightings into the inventory, one at a time, under the device's lock.
async fn record_loop(state: AppState, mut rx: mpsc::Receiver<Seen>, logkeep: i64) {
    while let Some(s) = rx.recv().await {
        let _guard = state.lock_device(&s.mac).await;
        let now = crate::app::now();
        let mut st = match state.store().load(&s.mac).await {
            Ok(Some(st)) => st,
            Ok(None) => DeviceState::new(&s.mac, now),
            Err(e) => {
                tracing::warn!(mac = %s.mac, error = %e, "cannot record a plug-and-play phone");
                continue;
            }
        };
        st.seen = now;
        st.device.ip = Some(match s.src.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(|v4| v4.to_string())
                .unwrap_or_else(|| v6.to_string()),
            v4 => v4.to_string(),
        });
        st.first_seen.get_or_insert(now);
        if let Some(b) = s.brand {
            st.vendor = Some(b.id().to_string());
        }
        if let Some(m) = &s.model {
            // The vendor modules name Snom models without the prefix (`D785`).
            let m = match s.brand {
                Some(Brand::Snom) => m.strip_prefix("snom").unwrap_or(m),
                _ => m,
            };
            st.model = Some(m.to_string());
        }
        let what = [
            s.brand.map(|b| b.id().to_string()),
            s.model.clone(),
            s.version.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        st.add_msg("", now);
        st.add_msg(
            &format!(
                "seen via SIP PnP from {} ({}); sent {}",
                hostport(s.src),
                if what.is_empty() {
                    "unknown brand"
                } else {
                    &what
                },
                s.url
            ),
            now,
        );
        st.prune_msgs(now, logkeep);
        if let Err(e) = state.store().save(&st).await {
            tracing::warn!(mac = %s.mac, error = %e, "cannot record a plug-and-play phone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(max: u32) -> (Core, mpsc::Receiver<Seen>) {
        let (tx, rx) = mpsc::channel(4);
        let settings = PnpSettings {
            base_url: "http://192.0.2.5:8080/".into(),
            pnp_urls: [("yealink".to_string(), "{base}/yl/".to_string())].into(),
            max_per_second: max,
            logkeep: 1800,
            record: true,
        };
        (
            Core::new(
                settings,
                Arc::default(),
                "192.0.2.5:5060".parse().unwrap(),
                tx,
            ),
            rx,
        )
    }

    fn subscribe(user: &str, call_id: &str) -> Vec<u8> {
        format!(
            "SUBSCRIBE sip:{user}@224.0.1.75 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.9:5080;branch=z9hG4bK{call_id}\r\n\
             From: <sip:{user}@224.0.1.75>;tag=ph\r\n\
             To: <sip:{user}@224.0.1.75>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 SUBSCRIBE\r\n\
             Event: ua-profile;profile-type=\"device\";vendor=\"OEM\";model=\"T21D\";version=\"1\"\r\n\
             Accept: application/url\r\n\
             Expires: 0\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn answers_and_notifies() {
        let (mut c, mut rx) = core(10);
        let src: SocketAddr = "10.0.0.9:5080".parse().unwrap();
        let now = Instant::now();
        let out = c.handle(&subscribe("MAC%3a001565AABBCC", "c1"), src, now);
        assert_eq!(out.len(), 2);
        let ok = Message::parse(&out[0].0).unwrap();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.header("Expires"), Some("0"));
        let to_tag = param(ok.header("To").unwrap(), "tag").unwrap().to_string();
        let n = Message::parse(&out[1].0).unwrap();
        assert_eq!(n.uri(), Some("sip:10.0.0.9:5080"));
        assert_eq!(n.body, b"http://192.0.2.5:8080/yl/");
        assert_eq!(n.header("Content-Type"), Some("application/url"));
        assert_eq!(
            param(n.header("From").unwrap(), "tag"),
            Some(to_tag.as_str())
        );
        assert_eq!(param(n.header("To").unwrap(), "tag"), Some("ph"));
        assert!(n.header("Event").unwrap().starts_with("ua-profile"));
        let seen = rx.try_recv().unwrap();
        assert_eq!(seen.mac, "001565aabbcc");
        assert_eq!(seen.brand, Some(Brand::Yealink));
        // A retransmitted SUBSCRIBE gets the same 200 and no second NOTIFY.
        let again = c.handle(&subscribe("MAC%3a001565AABBCC", "c1"), src, now);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, out[0].0);
        // The NOTIFY is retransmitted until the phone answers.
        assert_eq!(c.retransmissions(now + Duration::from_millis(600)).len(), 1);
        let cseq = n.header("CSeq").unwrap();
        let answer = format!("SIP/2.0 200 OK\r\nCall-ID: c1\r\nCSeq: {cseq}\r\n\r\n");
        assert!(c.handle(answer.as_bytes(), src, now).is_empty());
        assert!(c.retransmissions(now + Duration::from_secs(10)).is_empty());
        assert_eq!(c.stats.notifies_answered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn drops_what_is_not_pnp() {
        let (mut c, _rx) = core(10);
        let src: SocketAddr = "10.0.0.9:5060".parse().unwrap();
        let now = Instant::now();
        let sub = String::from_utf8(subscribe("MAC001565aabbcc", "x")).unwrap();
        assert!(c
            .handle(sub.replace("ua-profile", "presence").as_bytes(), src, now)
            .is_empty());
        assert!(c
            .handle(
                sub.replace("SUBSCRIBE sip", "OPTIONS sip").as_bytes(),
                src,
                now
            )
            .is_empty());
        assert!(c
            .handle(subscribe("alice", "y").as_slice(), src, now)
            .is_empty());
        assert!(c.handle(&sub.as_bytes()[..100], src, now).is_empty());
        assert!(c.handle(&vec![b'x'; 70_000], src, now).is_empty());
        assert!(c.handle(b"\r\n\r\n", src, now).is_empty());
        assert_eq!(c.stats.ignored.load(Ordering::Relaxed), 3);
        assert_eq!(c.stats.malformed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn rate_and_memory_are_bounded() {
        let (mut c, _rx) = core(5);
        let src: SocketAddr = "10.0.0.9:5060".parse().unwrap();
        let now = Instant::now();
        let mut answered = 0;
        for i in 0..20_000u32 {
            let mac = format!("MAC0015650{i:05x}");
            if !c
                .handle(&subscribe(&mac, &format!("f{i}")), src, now)
                .is_empty()
            {
                answered += 1;
            }
        }
        assert_eq!(answered, 5);
        assert_eq!(c.stats.rate_limited.load(Ordering::Relaxed), 19_995);
        assert!(c.stats.tracked.load(Ordering::Relaxed) <= (2 * MAX_TRACKED + MAX_PENDING) as u64);
        // The queue towards the database holds 4; the rest are skipped, not buffered.
        assert_eq!(c.stats.records_skipped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn urls_per_brand() {
        let (c, _rx) = core(1);
        assert_eq!(
            c.settings.url_for(Some(Brand::Snom)),
            "http://192.0.2.5:8080/snom/"
        );
        assert_eq!(
            c.settings.url_for(Some(Brand::Fanvil)),
            "http://192.0.2.5:8080/fanvil/$mac.cfg"
        );
        assert_eq!(c.settings.url_for(None), "http://192.0.2.5:8080/");
    }
}
