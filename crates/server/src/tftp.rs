//! A read-only TFTP server (RFC 1350, with the option extension of RFC 2347 and the `blksize`,
//! `timeout` and `tsize` options of RFC 2348/2349) for phones that default to TFTP.
//!
//! It has no files of its own: a read request for `name` is answered with what the HTTP router
//! answers for `GET /name` (built with [`crate::router`] and called in-process), so TFTP serves
//! exactly what HTTP serves — every vendor's files included — and can never reach anything HTTP
//! would refuse. Write requests are refused. Transfers stream the HTTP body block by block;
//! memory per transfer is one block plus one body chunk, and at most `tftp.max_sessions`
//! transfers run at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use autoprov_core::config::Tftp;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::app::{AppState, ListenerInfo};
use crate::discovery::DiscoveryError;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;
const DEFAULT_BLKSIZE: usize = 512;
const MAX_BLKSIZE: usize = 65464;

/// TFTP error codes (RFC 1350).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    NotDefined = 0,
    NotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
}

fn error_packet(code: Code, msg: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + msg.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&(code as u16).to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// A parsed read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadRequest {
    write: bool,
    filename: String,
    netascii: bool,
    /// Options in the order given, names lower-cased.
    options: Vec<(String, String)>,
}

fn parse_request(p: &[u8]) -> Result<ReadRequest, &'static str> {
    if p.len() < 4 {
        return Err("packet too short");
    }
    let op = u16::from_be_bytes([p[0], p[1]]);
    if op != RRQ && op != WRQ {
        return Err("not a read request");
    }
    let body = &p[2..];
    if body.last() != Some(&0) {
        return Err("request not NUL-terminated");
    }
    let mut fields = body[..body.len() - 1]
        .split(|b| *b == 0)
        .map(|f| std::str::from_utf8(f).map_err(|_| "request is not text"));
    let filename = fields.next().ok_or("no file name")??.to_string();
    let mode = fields.next().ok_or("no mode")??.to_ascii_lowercase();
    let netascii = match mode.as_str() {
        "octet" => false,
        "netascii" => true,
        _ => return Err("mode must be octet or netascii"),
    };
    let mut options = Vec::new();
    while let Some(name) = fields.next() {
        let value = fields.next().ok_or("option without a value")??;
        options.push((name?.to_ascii_lowercase(), value.to_string()));
    }
    if filename.is_empty() || filename.chars().any(|c| c.is_control()) {
        return Err("bad file name");
    }
    Ok(ReadRequest {
        write: op == WRQ,
        filename,
        netascii,
        options,
    })
}

/// How the TFTP server calls the router.
#[derive(Debug, Clone)]
pub struct TftpSettings {
    /// `Host` header of the synthetic requests (the provisioning URL's host and port).
    pub host: String,
    /// The HTTP listener the requests pretend to arrive on.
    pub http_local: Option<SocketAddr>,
    pub timeout: Duration,
    pub retries: u32,
    pub max_sessions: usize,
}

impl TftpSettings {
    pub fn new(cfg: &Tftp, provisioning_url: &str, http_local: Option<SocketAddr>) -> Self {
        let rest = provisioning_url
            .split_once("://")
            .map(|p| p.1)
            .unwrap_or(provisioning_url);
        TftpSettings {
            host: rest.split('/').next().unwrap_or_default().to_string(),
            http_local,
            timeout: Duration::from_secs(cfg.timeout.clamp(1, 255)),
            retries: cfg.retries.max(1),
            max_sessions: cfg.max_sessions.max(1) as usize,
        }
    }
}

/// A bound TFTP socket, not yet serving.
pub struct TftpServer {
    socket: UdpSocket,
    local: SocketAddr,
}

/// Bind `tftp.listen`. Must be called inside a tokio runtime.
pub fn bind(cfg: &Tftp) -> Result<TftpServer, DiscoveryError> {
    let addr: SocketAddr = cfg.listen.parse().map_err(|_| DiscoveryError::Config {
        what: "tftp.listen",
        message: format!("'{}' is not ADDR:PORT", cfg.listen),
    })?;
    let io = |source| DiscoveryError::Bind {
        what: "TFTP",
        addr,
        source,
    };
    let std = std::net::UdpSocket::bind(addr).map_err(io)?;
    std.set_nonblocking(true).map_err(io)?;
    let socket = UdpSocket::from_std(std).map_err(io)?;
    let local = socket.local_addr().map_err(io)?;
    Ok(TftpServer { socket, local })
}

impl TftpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serve read requests until `shutdown` completes; transfers in flight are abandoned.
    pub async fn run(
        self,
        state: AppState,
        settings: TftpSettings,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let router = crate::router(state);
        let settings = Arc::new(settings);
        let slots = Arc::new(Semaphore::new(settings.max_sessions));
        let mut sessions = tokio::task::JoinSet::new();
        let mut buf = vec![0u8; 2048];
        tracing::info!(local = %self.local, "TFTP server running");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, peer)) = r else { continue };
                    let req = match parse_request(&buf[..n]) {
                        Ok(r) => r,
                        Err(why) => {
                            tracing::debug!(%peer, why, "TFTP packet ignored");
                            // Stray ACK/DATA/ERROR packets to the main port get no answer.
                            if n >= 2 && matches!(u16::from_be_bytes([buf[0], buf[1]]), RRQ | WRQ) {
                                let _ = self.socket.send_to(&error_packet(Code::IllegalOperation, why), peer).await;
                            }
                            continue;
                        }
                    };
                    if req.write {
                        tracing::info!(%peer, file = %req.filename, "TFTP write refused");
                        let _ = self.socket.send_to(&error_packet(Code::AccessViolation, "read-only server"), peer).await;
                        continue;
                    }
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, file = %req.filename, "TFTP busy: tftp.max_sessions transfers running");
                        let _ = self.socket.send_to(&error_packet(Code::NotDefined, "server busy, try again"), peer).await;
                        continue;
                    };
                    let router = router.clone();
                    let settings = settings.clone();
                    let local_ip = self.local.ip();
                    sessions.spawn(async move {
                        transfer(router, settings, local_ip, peer, req).await;
                        drop(permit);
                    });
                }
            }
        }
        sessions.abort_all();
        tracing::info!(local = %self.local, "TFTP server stopped");
    }
}

/// `name` or `/name?query` → the path-and-query of the synthetic HTTP request.
fn uri_for(filename: &str) -> Option<axum::http::Uri> {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const PATH: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'%')
        .add(b'\\');
    const QUERY: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'<')
        .add(b'>')
        .add(b'\\');
    let name = filename.replace('\\', "/");
    let (path, query) = match name.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (name.as_str(), None),
    };
    let mut s = format!(
        "/{}",
        utf8_percent_encode(path.trim_start_matches('/'), PATH)
    );
    if let Some(q) = query {
        s.push('?');
        s.push_str(&utf8_percent_encode(q, QUERY).to_string());
    }
    s.parse().ok()
}

/// One read transfer on its own socket (its own transfer id).
async fn transfer(
    router: Router,
    settings: Arc<TftpSettings>,
    local_ip: std::net::IpAddr,
    peer: SocketAddr,
    req: ReadRequest,
) {
    let sock = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "TFTP: cannot open a transfer socket");
            return;
        }
    };
    if sock.connect(peer).await.is_err() {
        return;
    }
    let Some(uri) = uri_for(&req.filename) else {
        let _ = sock
            .send(&error_packet(Code::NotFound, "bad file name"))
            .await;
        return;
    };
    let mut http = Request::builder()
        .method("GET")
        .uri(uri.clone())
        .header(header::HOST, settings.host.as_str())
        .body(Body::empty())
        .expect("valid request parts");
    http.extensions_mut().insert(ConnectInfo(peer));
    if let Some(local) = settings.http_local {
        http.extensions_mut().insert(ListenerInfo {
            local,
            https: false,
        });
    }
    let resp = match router.oneshot(http).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    if status != StatusCode::OK {
        let (code, msg) = match status {
            StatusCode::NOT_FOUND => (Code::NotFound, "file not found".to_string()),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                (Code::AccessViolation, "access denied".to_string())
            }
            s => (Code::NotDefined, format!("HTTP {s}")),
        };
        tracing::info!(%peer, file = %req.filename, %status, "TFTP read refused");
        let _ = sock.send(&error_packet(code, &msg)).await;
        return;
    }
    let size = axum::body::HttpBody::size_hint(resp.body()).exact();
    let body = resp.into_body();

    let mut timeout = settings.timeout;
    let mut blksize = DEFAULT_BLKSIZE;
    let mut oack: Vec<(String, String)> = Vec::new();
    for (name, value) in &req.options {
        match name.as_str() {
            "blksize" => {
                if let Ok(n) = value.parse::<usize>() {
                    if n >= 8 {
                        blksize = n.min(MAX_BLKSIZE);
                        oack.push((name.clone(), blksize.to_string()));
                    }
                }
            }
            "timeout" => {
                if let Ok(n @ 1..=255) = value.parse::<u64>() {
                    timeout = Duration::from_secs(n);
                    oack.push((name.clone(), n.to_string()));
                }
            }
            "tsize" => {
                if let (Some(n), false) = (size, req.netascii) {
                    oack.push((name.clone(), n.to_string()));
                }
            }
            _ => {}
        }
    }
    let mut xfer = Transfer {
        sock,
        timeout,
        retries: settings.retries,
    };
    if !oack.is_empty() {
        let mut p = OACK.to_be_bytes().to_vec();
        for (k, v) in &oack {
            p.extend_from_slice(k.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        }
        if let Err(why) = xfer.send_until_acked(&p, 0).await {
            tracing::info!(%peer, file = %req.filename, why, "TFTP transfer abandoned");
            return;
        }
    }
    match xfer.send_body(body, blksize, req.netascii).await {
        Ok(bytes) => {
            tracing::info!(%peer, file = %req.filename, bytes, "TFTP transfer done")
        }
        Err(why) => {
            tracing::info!(%peer, file = %req.filename, why, "TFTP transfer abandoned")
        }
    }
}

struct Transfer {
    sock: UdpSocket,
    timeout: Duration,
    retries: u32,
}

impl Transfer {
    /// Send `packet` and wait for the ACK of `block`, retransmitting on timeout.
    async fn send_until_acked(&mut self, packet: &[u8], block: u16) -> Result<(), &'static str> {
        let mut buf = [0u8; 516];
        for _ in 0..=self.retries {
            self.sock.send(packet).await.map_err(|_| "send failed")?;
            let deadline = tokio::time::Instant::now() + self.timeout;
            loop {
                let r = tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await;
                let n = match r {
                    Err(_) => break, // timeout: retransmit
                    Ok(Err(_)) => return Err("client unreachable"),
                    Ok(Ok(n)) => n,
                };
                if n < 4 {
                    continue;
                }
                match u16::from_be_bytes([buf[0], buf[1]]) {
                    ACK if u16::from_be_bytes([buf[2], buf[3]]) == block => return Ok(()),
                    ACK => continue, // a duplicate ACK of an earlier block
                    ERROR => return Err("client sent an error"),
                    _ => {
                        let _ = self
                            .sock
                            .send(&error_packet(Code::IllegalOperation, "expected ACK"))
                            .await;
                        return Err("client sent an unexpected packet");
                    }
                }
            }
        }
        Err("no ACK from the client")
    }

    /// Stream the body in blocks. Returns the bytes sent.
    async fn send_body(
        &mut self,
        mut body: Body,
        blksize: usize,
        netascii: bool,
    ) -> Result<u64, &'static str> {
        let mut pending = BytesMut::new();
        let mut ended = false;
        let mut block: u16 = 0;
        let mut sent: u64 = 0;
        loop {
            while !ended && pending.len() < blksize {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            if netascii {
                                to_netascii(&data, &mut pending);
                            } else {
                                pending.extend_from_slice(&data);
                            }
                        }
                    }
                    Some(Err(_)) => {
                        let _ = self
                            .sock
                            .send(&error_packet(Code::NotDefined, "read error"))
                            .await;
                        return Err("the HTTP body failed");
                    }
                    None => ended = true,
                }
            }
            let n = pending.len().min(blksize);
            block = block.wrapping_add(1);
            let mut p = Vec::with_capacity(4 + n);
            p.extend_from_slice(&DATA.to_be_bytes());
            p.extend_from_slice(&block.to_be_bytes());
            p.extend_from_slice(&pending[..n]);
            pending.advance(n);
            self.send_until_acked(&p, block).await?;
            sent += n as u64;
            if n < blksize {
                return Ok(sent);
            }
        }
    }
}

/// Netascii (RFC 764) as tftp-hpa sends it: LF → CR LF, CR → CR NUL (a client reverses both,
/// so text that already has CR LF arrives unchanged).
fn to_netascii(data: &[u8], out: &mut BytesMut) {
    for &b in data {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.extend_from_slice(&[b]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(name: &str, mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for s in [name, mode] {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        for (k, v) in opts {
            p.extend_from_slice(k.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn requests() {
        let r = parse_request(&rrq(
            "cfg000b82aabbcc.xml",
            "OCTET",
            &[("BLKSIZE", "1428"), ("tsize", "0")],
        ))
        .unwrap();
        assert_eq!(r.filename, "cfg000b82aabbcc.xml");
        assert!(!r.netascii && !r.write);
        assert_eq!(r.options[0], ("blksize".into(), "1428".into()));
        assert!(parse_request(&rrq("x", "mail", &[])).is_err());
        assert!(parse_request(b"\x00\x01abc").is_err());
        assert!(parse_request(b"\x00\x04\x00\x01").is_err());
        let mut bad = rrq("x", "octet", &[]);
        bad.extend_from_slice(b"blksize\0");
        assert!(parse_request(&bad).is_err());
    }

    #[test]
    fn uris() {
        assert_eq!(
            uri_for("snomD785.htm").unwrap().to_string(),
            "/snomD785.htm"
        );
        assert_eq!(
            uri_for("/fw/1/a b.bin").unwrap().to_string(),
            "/fw/1/a%20b.bin"
        );
        assert_eq!(
            uri_for("update.php?type=IP232&sn=1").unwrap().to_string(),
            "/update.php?type=IP232&sn=1"
        );
    }

    #[test]
    fn netascii() {
        let mut out = BytesMut::new();
        to_netascii(b"a\nb\rc\r\n", &mut out);
        assert_eq!(&out[..], b"a\r\nb\r\0c\r\0\r\n");
    }
}
