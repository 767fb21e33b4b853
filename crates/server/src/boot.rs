//! Startup and shutdown: opens the store, starts the worker arbiters, recovers the
//! definitions and messages, then the management API and the AMQP listener, and serves
//! until SIGINT or SIGTERM (every connection then gets connection.close 320).

use crate::broker::runtime::{Runtime, Storage};
use crate::config::Config;
use actix::prelude::*;
use broker_core::store::MessageStore;
use broker_store::store::{Flusher, SledStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{error, info};

/// Raises the open-files limit to the hard limit, so many connections can be held.
fn raise_nofile_limit() {
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                info!(from = old, to = lim.rlim_max, "raised open-files limit");
            }
        }
    }
}

/// Starts the worker arbiters and the listener, and serves until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), String> {
    raise_nofile_limit();
    let store = Arc::new(SledStore::open(&config.data_dir)?);
    info!(dir = %config.data_dir.display(), bytes = store.size_on_disk(), "store opened");
    let storage = Storage {
        definitions: store.clone(),
        messages: store.clone(),
        flusher: Flusher::start(store.clone()),
    };
    let system = System::new();
    let workers = config.workers;
    let arbiters: Vec<ArbiterHandle> = (0..workers).map(|_| Arbiter::new().handle()).collect();
    let listen = config.listen;
    let result = system.block_on(async move {
        // signal handlers first: a SIGTERM right after "listening" must shut down
        // cleanly, not hit the default action
        let signals = shutdown_signal();
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let rt = Runtime::new(config, arbiters, Some(storage))?;
        let _ = rt.amqp_addr.set(local);
        // recover everything before the first connection is accepted
        crate::broker::definitions::recover_all(&rt).await?;
        if let Some(addr) = rt.config.http_listen.clone() {
            match crate::http::start(rt.clone(), &addr) {
                Ok(bound) => {
                    info!("management API listening on http://{bound}");
                    println!("management API listening on http://{bound}");
                }
                Err(e) => return Err(format!("cannot start the management API on {addr}: {e}")),
            }
        }
        info!(workers, "broker listening on {local}");
        println!("broker listening on {local}");
        let accept = crate::amqp::listener::accept_loop(listener, rt.clone());
        tokio::select! {
            _ = accept => {}
            _ = signals => {}
        }
        info!("shutting down: closing connections");
        shutdown(&rt).await;
        Ok::<(), String>(())
    });
    System::current().stop();
    // delivered markers and acks since the last group commit are made durable too, so a
    // clean stop loses nothing (actors may still hold the store, so it is not dropped)
    match MessageStore::flush(&*store) {
        Ok(()) => info!("store flushed"),
        Err(e) => error!("cannot flush the store on shutdown: {e}"),
    }
    result
}

fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // registered now (the caller awaits later)
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        match (term, int) {
            (Some(mut t), Some(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            (Some(mut t), None) => {
                t.recv().await;
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Closes every connection, then has every queue record what it delivered, so those
/// messages come back redelivered after the restart.
async fn shutdown(rt: &Arc<Runtime>) {
    let closed = crate::amqp::listener::close_all(rt).await;
    let queues: Vec<_> = rt.vhosts.iter().flat_map(|v| v.value().queues()).collect();
    let save = futures::future::join_all(queues.iter().map(|q| q.save_delivered_mark()));
    let _ = tokio::time::timeout(Duration::from_secs(5), save).await;
    info!(closed, "broker stopped");
}
