//! Binding listeners and running the server on them until shutdown.
//!
//! [`bind`] binds every address first (port 0 allowed) so a caller learns the real ports
//! ([`Bound::local_addrs`]) before serving; [`Bound::run`] serves the [`crate::router`] on all
//! of them with graceful shutdown. Each listener tells its handlers its own local address
//! through a [`ListenerInfo`] extension. [`serve`] does both in one call.
//!
//! Plain HTTP only for now; TLS listeners will set `ListenerInfo::https`. This module must
//! not look at requests: routing and answers belong to the handlers.

use std::future::Future;
use std::net::SocketAddr;

use axum::Extension;
use futures_util::future::try_join_all;
use tokio::net::TcpListener;

use crate::app::{AppState, ListenerInfo};
use crate::ServerError;

/// Listeners bound and not yet serving.
pub struct Bound {
    listeners: Vec<(TcpListener, SocketAddr)>,
}

/// Bind every address. Fails on the first address that cannot be bound, naming it.
pub async fn bind(addrs: &[SocketAddr]) -> Result<Bound, ServerError> {
    if addrs.is_empty() {
        return Err(ServerError::NoListeners);
    }
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local = l
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        listeners.push((l, local));
    }
    Ok(Bound { listeners })
}

impl Bound {
    /// The addresses actually bound (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, a)| *a).collect()
    }

    /// Serve until `shutdown` completes, then finish the requests in flight and return.
    pub async fn run(
        self,
        state: AppState,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        let router = crate::router(state);
        let servers = self.listeners.into_iter().map(|(listener, local)| {
            let app = router.clone().layer(Extension(ListenerInfo {
                local,
                https: false,
            }));
            let mut rx = rx.clone();
            async move {
                tracing::info!(%local, "listening");
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    // A dropped sender also means: stop.
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(|source| ServerError::Serve {
                    addr: local,
                    source,
                })
            }
        });
        try_join_all(servers).await?;
        tracing::info!("server stopped");
        Ok(())
    }
}

/// Bind `listeners`, log them, serve until `shutdown`; returns the bound addresses.
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
