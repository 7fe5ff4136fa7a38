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
//! Shutdown is graceful: no new connections, requests in flight finish (at most 30 s).
//! This module must not look at requests: routing and answers belong to the handlers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use futures_util::future::try_join_all;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

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
        let router = crate::router(state.clone());
        let servers = self.listeners.into_iter().map(|(listener, local, kind)| {
            let ctx = Arc::new(ListenerCtx {
                local,
                kind,
                router: router.clone(),
                state: state.clone(),
                tls: tls.clone(),
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
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    mut rx: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = rx.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let ctx = ctx.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    serve_connection(ctx, tcp, peer, watcher).await;
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
) {
    let _ = tcp.set_nodelay(true);
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
            };
            Box::pin(http(ctx, TokioIo::new(stream), peer, info, conn, watcher)).await;
        }
        _ => {
            let conn = ConnInfo {
                kind: ListenerKind::Http,
                trusted_proxy,
                client_cert: None,
            };
            let io = TokioIo::new(crate::sendfile::SendfileStream::new(tcp));
            Box::pin(http(ctx, io, peer, info, conn, watcher)).await;
        }
    }
}

async fn http<I>(
    ctx: Arc<ListenerCtx>,
    io: I,
    peer: SocketAddr,
    info: ListenerInfo,
    conn: ConnInfo,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let router = ctx.router.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let ext = req.extensions_mut();
        ext.insert(ConnectInfo(peer));
        ext.insert(info);
        ext.insert(conn.clone());
        let router = router.clone();
        async move {
            let resp = router
                .oneshot(req.map(axum::body::Body::new))
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            Ok::<_, Infallible>(resp)
        }
    });
    // Plain HTTP is HTTP/1.1 (phones never speak h2c): served without the protocol
    // detection of the auto builder, which costs a read and a buffer per connection. TLS
    // listeners negotiate h2 or http/1.1 by ALPN and keep the auto builder.
    let result = if info.https {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(io, svc);
        watcher.watch(connection.into_owned()).await
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
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
