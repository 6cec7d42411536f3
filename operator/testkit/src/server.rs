//! Spawning an axum router on a loopback port, and stopping it when its owner is dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use tokio::sync::watch;

/// Every test server binds this address: tests never listen beyond the machine.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A router serving on a bound port. Dropping it stops accepting and closes idle connections
/// (graceful shutdown), so a test can "restart" a server by dropping it and starting another.
pub(crate) struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Running {
    /// Binds `127.0.0.1:port` (`0` = a free port) and serves `router` on the current tokio runtime.
    pub async fn spawn(port: u16, router: Router) -> std::io::Result<Running> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(LOOPBACK, port)).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%addr, error = %e, "test server stopped with an error");
            }
        });
        Ok(Running { addr, stop })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
