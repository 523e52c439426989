//! Shutdown signals: SIGTERM as well as ctrl-c.

use std::future::Future;

use tokio::sync::watch;

/// Resolves on the first SIGTERM or ctrl-c (SIGINT).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for ctrl-c: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// One listener for SIGTERM and ctrl-c, counting them, so each signal is
/// logged once however many futures wait on it: the first starts the
/// drain, the second cuts it short.
#[derive(Debug)]
pub struct Signals {
    count: watch::Receiver<u32>,
}

impl Signals {
    /// Start listening (inside a tokio runtime).
    pub fn listen() -> Self {
        let (tx, count) = watch::channel(0);
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                signal().await;
                seen += 1;
                if tx.send(seen).is_err() {
                    break;
                }
            }
        });
        Self { count }
    }

    /// Resolves once `n` signals have arrived.
    pub fn nth(&self, n: u32) -> impl Future<Output = ()> + Send + 'static {
        let mut count = self.count.clone();
        async move {
            if count.wait_for(|seen| *seen >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
