//! Startup and shutdown: opens the store, starts the worker arbiters, recovers the
//! definitions and messages, then the management API and the AMQP listeners (plain and
//! TLS), and serves until SIGINT or SIGTERM (every connection then gets connection.close
//! 320). SIGHUP re-reads the TLS certificates.

use crate::broker::cluster::ClusterNode;
use crate::broker::runtime::{Runtime, Storage};
use crate::config::Config;
use crate::tls::Reloadable;
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
    crate::broker::node::set_node_name(&config.node_name);
    let store = Arc::new(SledStore::open(&config.data_dir)?);
    info!(dir = %config.data_dir.display(), bytes = store.size_on_disk(), "store opened");
    let flusher = Flusher::start(store.clone());
    let cluster = ClusterNode::start(&config.node_name, &store, flusher.clone())?;
    let storage = Storage {
        definitions: store.clone(),
        messages: store.clone(),
        dedup: store.clone(),
        streams: store.streams(),
        flusher,
        cluster,
    };
    let system = System::new();
    let workers = config.workers;
    let arbiters: Vec<ArbiterHandle> = (0..workers).map(|_| Arbiter::new().handle()).collect();
    let (listen, tls_listen) = (config.listen, config.tls_listen);
    // certificates are read before anything listens, so a bad file fails the start
    let amqp_tls = config
        .tls
        .clone()
        .map(Reloadable::load)
        .transpose()?
        .map(Arc::new);
    let http_tls = config
        .http_tls
        .clone()
        .map(Reloadable::load)
        .transpose()?
        .map(Arc::new);
    let result = system.block_on(async move {
        // signal handlers first: a SIGTERM right after "listening" must shut down
        // cleanly, not hit the default action
        let signals = shutdown_signal();
        let reloads = reload_on_hangup([amqp_tls.clone(), http_tls.clone()]);
        let plain = bind(listen).await?;
        let secure = bind(tls_listen).await?;
        let rt = Runtime::new(config, arbiters, Some(storage))?;
        if let Some((_, local)) = plain.as_ref().or(secure.as_ref()) {
            let _ = rt.amqp_addr.set(*local);
        }
        // a node of several serves its management API while it waits for its peers, so
        // /api/nodes and `broker-cli cluster status` show why it waits (changes answer
        // 541 until it is a member)
        let mut http_tls = Some(http_tls);
        if rt.config.cluster.is_some() {
            start_http(&rt, http_tls.take().flatten())?;
        }
        // the metadata group first: its replay of the log tail completes the store's
        // definitions (and materializes them), so message recovery finds every durable
        // queue, and none of their messages is swept as an orphan
        crate::broker::materialize::defer(&rt);
        crate::broker::meta::start(&rt).await?;
        // recover everything before the first connection is accepted; the topology
        // changes applied meanwhile (a cluster runs on) are materialized after it
        crate::broker::definitions::recover_all(&rt).await?;
        crate::broker::materialize::recovered(&rt);
        rt.shovels.start(crate::broker::shovel::StartEnv {
            local: plain.as_ref().map(|(_, a)| *a),
            secret: rt.registry.internal_secret().to_owned(),
            clustered: rt.config.cluster.is_some(),
            members: {
                let storage = rt.store.clone();
                Box::new(move || {
                    let status = storage
                        .as_ref()
                        .and_then(crate::broker::membership::status)?;
                    Some(
                        status
                            .nodes
                            .into_iter()
                            .filter(|n| n.running)
                            .map(|n| n.name)
                            .collect(),
                    )
                })
            },
        })?;
        if let Some(tls) = http_tls {
            start_http(&rt, tls)?;
        }
        let accept_plain = serve(plain, rt.clone(), None, "broker listening on");
        let accept_tls = serve(secure, rt.clone(), amqp_tls, "broker listening for TLS on");
        tokio::select! {
            _ = accept_plain => {}
            _ = accept_tls => {}
            _ = reloads => {}
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

/// Starts the management API if an address is configured.
fn start_http(rt: &Arc<Runtime>, tls: Option<Arc<Reloadable>>) -> Result<(), String> {
    let Some(addr) = rt.config.http_listen.clone() else {
        return Ok(());
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    match crate::http::start(rt.clone(), &addr, tls.map(|t| t.config())) {
        Ok(bound) => {
            info!("management API listening on {scheme}://{bound}");
            println!("management API listening on {scheme}://{bound}");
            Ok(())
        }
        Err(e) => Err(format!("cannot start the management API on {addr}: {e}")),
    }
}

/// Binds a listener if an address is configured.
async fn bind(
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<(TcpListener, std::net::SocketAddr)>, String> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(Some((listener, local)))
}

/// Accepts on `listener` (TLS with `tls`) after announcing it; never finishes when there
/// is no listener, so the other branches of the caller's select decide.
async fn serve(
    listener: Option<(TcpListener, std::net::SocketAddr)>,
    rt: Arc<Runtime>,
    tls: Option<Arc<Reloadable>>,
    banner: &str,
) {
    let Some((listener, local)) = listener else {
        return std::future::pending().await;
    };
    info!(workers = rt.config.workers, "{banner} {local}");
    println!("{banner} {local}");
    crate::amqp::listener::accept_loop(listener, rt, tls).await
}

/// Re-reads every TLS endpoint's files on each SIGHUP, for new handshakes; established
/// connections keep their sessions. Never finishes.
fn reload_on_hangup(
    endpoints: [Option<Arc<Reloadable>>; 2],
) -> impl std::future::Future<Output = ()> {
    // registered now, so a SIGHUP before the first await is not the default action (exit)
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        let Ok(mut hup) = hup else {
            error!("cannot handle SIGHUP: certificates will not be reloaded");
            return std::future::pending().await;
        };
        while hup.recv().await.is_some() {
            for t in endpoints.iter().flatten() {
                match t.reload() {
                    Ok(()) => info!("TLS certificates reloaded"),
                    Err(e) => error!("TLS certificates not reloaded, the old ones stay: {e}"),
                }
            }
        }
        std::future::pending().await
    }
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
    if let Some(s) = rt.store.as_ref() {
        crate::broker::membership::shutdown(s).await;
    }
    info!(closed, "broker stopped");
}
