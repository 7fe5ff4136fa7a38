//! Binding listeners and running the server on them until shutdown.
//!
//! Three kinds of listener serve the same [`crate::router`]: plain HTTP, HTTPS (server
//! certificate only) and MTLS (a client certificate is asked for and verified, see
//! [`crate::tls`]). [`bind`] / [`bind_listeners`] bind every address first (port 0 allowed) so
//! a caller learns the real ports ([`Bound::local_addrs`]) before serving; [`Bound::run`]
//! accepts connections, does the TLS handshake (bounded by `[tls] handshake_timeout`) and
//! hands each request to the router with these extensions:
//!
//! * `ConnectInfo<SocketAddr>`: the TCP peer;
//! * [`ListenerInfo`]: the local address and whether the listener speaks TLS;
//! * [`ConnInfo`]: the listener kind, whether the peer is a trusted reverse proxy (only then is
//!   `X-Forwarded-For` believed), and the verified client certificate on MTLS listeners.
//!
//! Connections are budgeted over all listeners ([`ConnBudget`], `[server] max_connections`,
//! by default derived from the open-files limit, which [`raise_nofile_limit`] lifts to its
//! hard limit): past the budget a connection is still accepted, but every request on it is
//! answered 503 with `Retry-After` and `Connection: close`; past a small overflow of such
//! connections the listeners wait for one to end. A storm therefore learns at once to come
//! back later, and the server never runs out of descriptors for its database and files.
//! A connection that sends nothing for `[server] idle_timeout` seconds (before its first
//! request's head is complete, or between two requests) is closed.
//!
//! Shutdown is graceful: no new connections, requests in flight finish (at most 30 s).
//! This module must not look at requests: routing and answers belong to the handlers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use futures_util::future::try_join_all;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use autoprov_core::innovaphone::ClientCert;

use crate::app::{AppState, ListenerInfo};
use crate::tls::TlsSetup;
use crate::ServerError;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Http,
    Https,
    Mtls,
}

impl ListenerKind {
    pub fn is_tls(self) -> bool {
        self != ListenerKind::Http
    }

    /// `http` or `https`, for URLs.
    pub fn scheme(self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListenerKind::Http => "HTTP",
            ListenerKind::Https => "HTTPS",
            ListenerKind::Mtls => "MTLS",
        })
    }
}

/// One address to listen on.
#[derive(Debug, Clone, Copy)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    pub kind: ListenerKind,
}

/// Per-connection facts put into every request's extensions by [`Bound::run`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub kind: ListenerKind,
    /// The peer is one of `[tls] trusted_proxies`: its `X-Forwarded-For` is believed.
    pub trusted_proxy: bool,
    /// The client certificate presented on an MTLS listener (verified or not).
    pub client_cert: Option<ClientCert>,
    /// The peer's address as requests report it ([`crate::respond::peer_text`]), formatted
    /// once per connection; `None` to format it from `ConnectInfo` per request.
    pub peer_ip: Option<Arc<str>>,
}

/// Listeners bound and not yet serving.
pub struct Bound {
    listeners: Vec<(TcpListener, SocketAddr, ListenerKind)>,
}

/// Bind plain HTTP listeners. Fails on the first address that cannot be bound, naming it.
pub async fn bind(addrs: &[SocketAddr]) -> Result<Bound, ServerError> {
    let specs: Vec<ListenSpec> = addrs
        .iter()
        .map(|&addr| ListenSpec {
            addr,
            kind: ListenerKind::Http,
        })
        .collect();
    bind_listeners(&specs).await
}

/// Bind listeners of any kind.
pub async fn bind_listeners(specs: &[ListenSpec]) -> Result<Bound, ServerError> {
    if specs.is_empty() {
        return Err(ServerError::NoListeners);
    }
    let mut listeners = Vec::with_capacity(specs.len());
    for s in specs {
        let addr = s.addr;
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local = l
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        listeners.push((l, local, s.kind));
    }
    Ok(Bound { listeners })
}

impl Bound {
    /// The addresses actually bound (with the ports chosen for port 0), in the order given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, a, _)| *a).collect()
    }

    /// The bound addresses with their kinds.
    pub fn listeners(&self) -> Vec<(SocketAddr, ListenerKind)> {
        self.listeners.iter().map(|(_, a, k)| (*a, *k)).collect()
    }

    /// Serve until `shutdown` completes, then finish the requests in flight and return.
    /// TLS listeners create the self-signed server certificate when none exists.
    pub async fn run(
        self,
        state: AppState,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let tls = if self.listeners.iter().any(|(_, _, k)| k.is_tls()) {
            let site = state.site_arc();
            let setup = tokio::task::spawn_blocking(move || TlsSetup::new(site))
                .await
                .map_err(|e| ServerError::Tls(e.to_string()))?
                .map_err(|e| ServerError::Tls(e.to_string()))?;
            Some(setup)
        } else {
            None
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        let budget = Arc::new(ConnBudget::for_config(
            state.site().config.server.max_connections,
        ));
        tracing::info!(
            max_connections = budget.max,
            overflow = budget.max_refusing,
            "connection budget"
        );
        state.metrics().watch_connections(&budget);
        let router = crate::router(state.clone());
        let servers = self.listeners.into_iter().map(|(listener, local, kind)| {
            let ctx = Arc::new(ListenerCtx {
                local,
                kind,
                router: router.clone(),
                state: state.clone(),
                tls: tls.clone(),
                budget: budget.clone(),
            });
            let rx = rx.clone();
            async move {
                tracing::info!(%local, %kind, "listening");
                accept_loop(listener, ctx, rx).await;
                Ok::<(), ServerError>(())
            }
        });
        try_join_all(servers).await?;
        tracing::info!("server stopped");
        Ok(())
    }
}

struct ListenerCtx {
    local: SocketAddr,
    kind: ListenerKind,
    router: axum::Router,
    state: AppState,
    tls: Option<TlsSetup>,
    budget: Arc<ConnBudget>,
}

/// Raise the soft limit of open files to the hard limit (as far as the process may); the
/// soft limit in force afterwards. A server holding one descriptor per phone connection
/// should not stop at the 1024 most systems start a process with.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

/// How many connections are open, over all listeners, against the budget.
pub struct ConnBudget {
    open: AtomicUsize,
    /// Connections served normally.
    pub max: usize,
    refusing: AtomicUsize,
    /// Connections beyond `max` answered 503, at most this many at once.
    pub max_refusing: usize,
    freed: tokio::sync::Notify,
    /// Accept loops waiting for a place: only then does a connection's end notify.
    waiting: AtomicUsize,
}

/// What a connection may do; dropping it gives its place back.
pub struct ConnPermit {
    budget: Arc<ConnBudget>,
    refusing: bool,
}

impl ConnPermit {
    /// Whether every request on the connection is to be answered 503.
    pub fn refusing(&self) -> bool {
        self.refusing
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let counter = if self.refusing {
            &self.budget.refusing
        } else {
            &self.budget.open
        };
        // SeqCst here and in `admit_wait`: either this sees the waiter, or the waiter sees
        // the place given back.
        counter.fetch_sub(1, Ordering::SeqCst);
        if self.budget.waiting.load(Ordering::SeqCst) > 0 {
            self.budget.freed.notify_waiters();
        }
    }
}

impl ConnBudget {
    /// `configured` connections (0: derived from the open-files limit after raising it,
    /// keeping an eighth of it, at least 64, for the database, firmware files and the rest).
    pub fn for_config(configured: u32) -> ConnBudget {
        let limit = raise_nofile_limit().min(1 << 24) as usize;
        let (max, max_refusing) = if configured > 0 {
            let max = configured as usize;
            let refusing = (max / 16).max(8);
            if max + refusing > limit {
                tracing::warn!(
                    max_connections = max,
                    open_files_limit = limit,
                    "[server] max_connections (and its overflow) exceed the open-files limit: accepts may fail"
                );
            }
            (max, refusing)
        } else {
            let usable = limit.saturating_sub((limit / 8).max(64)).max(24);
            let refusing = (usable / 17).max(8);
            (usable - refusing, refusing)
        };
        ConnBudget::new(max, max_refusing)
    }

    pub fn new(max: usize, max_refusing: usize) -> ConnBudget {
        ConnBudget {
            open: AtomicUsize::new(0),
            max: max.max(1),
            refusing: AtomicUsize::new(0),
            max_refusing: max_refusing.max(1),
            freed: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    fn take(counter: &AtomicUsize, max: usize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A place for a new connection: a normal one, else a refusing one, else none.
    pub fn admit(self: &Arc<Self>) -> Option<ConnPermit> {
        let refusing = if Self::take(&self.open, self.max) {
            false
        } else if Self::take(&self.refusing, self.max_refusing) {
            true
        } else {
            return None;
        };
        Some(ConnPermit {
            budget: self.clone(),
            refusing,
        })
    }

    /// A refusing permit taken before a connection arrived becomes a normal one when a
    /// normal place has been freed since.
    pub fn upgrade(self: &Arc<Self>, permit: ConnPermit) -> ConnPermit {
        if permit.refusing && Self::take(&self.open, self.max) {
            drop(permit);
            return ConnPermit {
                budget: self.clone(),
                refusing: false,
            };
        }
        permit
    }

    /// A place, waiting for a connection to end when there is none.
    pub async fn admit_wait(self: &Arc<Self>) -> ConnPermit {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a place freed in between is not missed.
            freed.as_mut().enable();
            if let Some(p) = self.admit() {
                return p;
            }
            freed.await;
        }
    }

    /// Connections open now (normal, refusing).
    pub fn in_use(&self) -> (usize, usize) {
        (
            self.open.load(Ordering::Acquire),
            self.refusing.load(Ordering::Acquire),
        )
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    mut rx: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut warned: Option<std::time::Instant> = None;
    loop {
        // A place first: when even the overflow is taken, new connections wait in the
        // kernel's backlog until one ends.
        let permit = match ctx.budget.admit() {
            Some(p) => p,
            None => {
                // Once per minute at most: in that state every freed place comes here again.
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    warned = Some(std::time::Instant::now());
                    tracing::warn!(local = %ctx.local, "connection budget and overflow exhausted; not accepting until a connection ends");
                }
                tokio::select! {
                    p = ctx.budget.admit_wait() => p,
                    _ = rx.wait_for(|stop| *stop) => break,
                }
            }
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = rx.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // The place was taken before the connection came; one may have freed since.
                let permit = ctx.budget.upgrade(permit);
                if permit.refusing() {
                    tracing::debug!(%peer, local = %ctx.local, "over the connection budget: answering 503");
                }
                let ctx = ctx.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    serve_connection(ctx, tcp, peer, watcher, permit).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(local = %ctx.local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!(local = %ctx.local, "connections still open after 30 s, closing them");
        }
    }
}

/// The connection's task. What it awaits is boxed: a task's future is moved when it is
/// spawned, and a connection's whole state (TLS, hyper, the routes) inline would make that
/// a copy of several kilobytes per connection.
async fn serve_connection(
    ctx: Arc<ListenerCtx>,
    tcp: TcpStream,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
    permit: ConnPermit,
) {
    let _ = tcp.set_nodelay(true);
    let refuse = permit.refusing();
    let site = ctx.state.site_arc();
    let trusted_proxy = site.config.tls.is_trusted_proxy(peer.ip());
    let info = ListenerInfo {
        local: ctx.local,
        https: ctx.kind.is_tls(),
    };
    match (&ctx.tls, ctx.kind) {
        (Some(tls), ListenerKind::Https | ListenerKind::Mtls) => {
            let configs = if ctx.kind == ListenerKind::Mtls {
                &tls.mtls
            } else {
                &tls.https
            };
            let timeout = Duration::from_secs(site.config.tls.handshake_timeout.max(1));
            // The ClientHello first: the cipher suite order depends on it.
            let handshake = async {
                let acceptor =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                let start = acceptor.await?;
                let config = configs.for_hello(&start.client_hello());
                start.into_stream(config).await
            };
            let stream = match tokio::time::timeout(timeout, Box::pin(handshake)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, local = %ctx.local, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, local = %ctx.local, "TLS handshake timed out");
                    return;
                }
            };
            let client_cert = if ctx.kind == ListenerKind::Mtls {
                let (_, conn) = stream.get_ref();
                tls.trust.client_cert(conn.peer_certificates())
            } else {
                None
            };
            if let Some(c) = &client_cert {
                tracing::debug!(%peer, subject = %c.subject_cn, issuer = %c.issuer_cn, verified = c.verified, "client certificate");
            }
            let conn = ConnInfo {
                kind: ctx.kind,
                trusted_proxy,
                client_cert,
                peer_ip: Some(crate::respond::peer_text(peer.ip()).into()),
            };
            let io = TokioIo::new(stream);
            Box::pin(http(ctx, io, peer, info, conn, watcher, refuse)).await;
        }
        _ => {
            let conn = ConnInfo {
                kind: ListenerKind::Http,
                trusted_proxy,
                client_cert: None,
                peer_ip: Some(crate::respond::peer_text(peer.ip()).into()),
            };
            let io = TokioIo::new(crate::sendfile::SendfileStream::new(tcp));
            Box::pin(http(ctx, io, peer, info, conn, watcher, refuse)).await;
        }
    }
    drop(permit);
}

async fn http<I>(
    ctx: Arc<ListenerCtx>,
    io: I,
    peer: SocketAddr,
    info: ListenerInfo,
    conn: ConnInfo,
    watcher: hyper_util::server::graceful::Watcher,
    refuse: bool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let server_cfg = &ctx.state.site().config.server;
    let retry_after = server_cfg.config_retry_after;
    // A refused connection gets little time to say what it wants.
    let idle = Duration::from_secs(if refuse {
        server_cfg.idle_timeout.clamp(1, 5)
    } else {
        server_cfg.idle_timeout.max(1)
    });
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let ext = req.extensions_mut();
        ext.insert(ConnectInfo(peer));
        ext.insert(info);
        ext.insert(conn.clone());
        let ctx = ctx.clone();
        async move {
            if refuse {
                ctx.state
                    .metrics()
                    .refused(crate::metrics::Budget::Connections);
                return Ok::<_, Infallible>(crate::overloaded(retry_after));
            }
            let req = req.map(axum::body::Body::new);
            Ok::<_, Infallible>(crate::serve_request(&ctx.state, &ctx.router, req).await)
        }
    });
    // Plain HTTP is HTTP/1.1 (phones never speak h2c): served without the protocol
    // detection of the auto builder, which costs a read and a buffer per connection. TLS
    // listeners negotiate h2 or http/1.1 by ALPN and keep the auto builder.
    let result = if info.https {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(idle);
        let connection = builder.serve_connection_with_upgrades(io, svc);
        watcher.watch(connection.into_owned()).await
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(idle)
            .serve_connection(io, svc);
        watcher
            .watch(connection)
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Bind `listeners` (plain HTTP), log them, serve until `shutdown`; returns the bound
/// addresses.
pub async fn serve(
    state: AppState,
    listeners: Vec<SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Vec<SocketAddr>, ServerError> {
    let bound = bind(&listeners).await?;
    let addrs = bound.local_addrs();
    bound.run(state, shutdown).await?;
    Ok(addrs)
}
