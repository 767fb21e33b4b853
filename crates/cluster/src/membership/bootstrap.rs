//! Forming the metadata group on first start, and keeping links to members that joined
//! later (docs/design/cluster.md §7).
//!
//! Every node listed in `--cluster-peers` calls `initialize` with the same member set
//! (openraft accepts the identical initial membership on every node), but only once
//! every listed peer answered the handshake with the identical peer set: a node
//! configured with another list would form another cluster (split brain), so the
//! difference is logged and the node waits for the operator. A node that differs
//! because its peers formed the group without it (it is new) asks them to add it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;
use tokio::sync::watch;

use super::join::{self, JoinReply, JoinRequest, JOIN_SERVICE};
use super::Bootstrap;
use crate::meta::MetaRaft;
use crate::net::{PeerAddr, Transport};
use crate::NodeId;

/// How often a waiting node looks again when nothing it watches changed (a peer's
/// handshake, this node's Raft metrics).
const RECHECK: Duration = Duration::from_millis(200);

/// The first-start task of a node with fresh Raft state.
pub(crate) struct Task {
    raft: MetaRaft,
    net: Transport,
    members: BTreeMap<NodeId, BasicNode>,
    addr: String,
    state: watch::Sender<Bootstrap>,
}

/// What one look at the peers found.
enum Look {
    /// Every listed peer answered with this node's set: form the group.
    Agreed,
    /// Not yet: why (for the log and the status).
    Wait(String),
}

impl Task {
    pub fn new(
        raft: MetaRaft,
        net: Transport,
        members: BTreeMap<NodeId, BasicNode>,
        addr: String,
        state: watch::Sender<Bootstrap>,
    ) -> Task {
        Task {
            raft,
            net,
            members,
            addr,
            state,
        }
    }

    /// Runs until the node is a member of the metadata group.
    pub async fn run(self) {
        let mut said = String::new();
        loop {
            match self.raft.is_initialized().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("metadata group stopped before it was formed: {e}");
                    return;
                }
            }
            match self.look() {
                Look::Agreed => match self.raft.initialize(self.members.clone()).await {
                    Ok(()) => {
                        tracing::info!(members = self.members.len(), "formed the metadata group");
                        break;
                    }
                    // another member's entries arrived first: the group is formed
                    Err(RaftError::APIError(InitializeError::NotAllowed(_))) => break,
                    Err(e) => self.wait(&mut said, format!("cannot initialize: {e}")),
                },
                Look::Wait(why) => {
                    if self.ask_to_join().await {
                        break;
                    }
                    self.wait(&mut said, why);
                }
            }
            self.pause().await;
        }
        self.state.send_replace(Bootstrap::Member);
    }

    /// Compares this node's set with what every listed peer said in its handshake.
    fn look(&self) -> Look {
        let mine: BTreeSet<String> = self.names();
        let mut missing = Vec::new();
        let mut differ = Vec::new();
        for (name, id) in self.net.peers() {
            if !self.members.contains_key(&id) {
                continue; // added later (a joined node), not configured
            }
            match self.net.peer_hello(id).filter(|_| self.net.is_up(id)) {
                None => missing.push(name),
                Some(h) => {
                    let theirs: BTreeSet<String> =
                        h.peers.iter().cloned().chain([h.name.clone()]).collect();
                    if theirs != mine {
                        differ.push(format!("{name} has {}", list(&theirs)));
                    }
                }
            }
        }
        if missing.is_empty() && differ.is_empty() {
            return Look::Agreed;
        }
        let mut why = Vec::new();
        if !differ.is_empty() {
            why.push(format!(
                "the nodes disagree on the cluster: this node has {}, {} (fix --cluster-peers so every node lists the same nodes)",
                list(&mine),
                differ.join(", ")
            ));
        }
        if !missing.is_empty() {
            why.push(format!("no answer yet from {}", missing.join(", ")));
        }
        Look::Wait(why.join("; "))
    }

    /// This node's configured set: its name and its peers'.
    fn names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.net.peers().into_iter().map(|(n, _)| n).collect();
        names.insert(self.net.name().to_string());
        names
    }

    /// Asks every reachable peer to add this node: true once one says it did.
    async fn ask_to_join(&self) -> bool {
        let req = JoinRequest {
            name: self.net.name().to_string(),
            addr: self.addr.clone(),
        };
        let Ok(payload) = join::encode(&req) else {
            return false;
        };
        for (name, id) in self.net.peers() {
            if !self.net.is_up(id) {
                continue;
            }
            match self.net.call(id, JOIN_SERVICE, payload.clone()).await {
                Ok(b) => match join::decode_reply(&b) {
                    Ok(JoinReply::Joined) => {
                        tracing::info!(via = %name, "joined the metadata group");
                        return true;
                    }
                    Ok(JoinReply::NotFormed) => {}
                    Err(e) => tracing::debug!(peer = %name, "join: {e}"),
                },
                Err(e) => tracing::debug!(peer = %name, "join: {e}"),
            }
        }
        false
    }

    /// Publishes why the node waits, and logs it when it changed.
    fn wait(&self, said: &mut String, why: String) {
        if *said != why {
            tracing::warn!("not forming the metadata group yet: {why}");
            said.clone_from(&why);
        }
        // watchers (the server logs each reason) hear of a change only
        self.state.send_if_modified(|now| {
            let changed = !matches!(now, Bootstrap::Waiting(w) if *w == why);
            if changed {
                *now = Bootstrap::Waiting(why);
            }
            changed
        });
    }

    /// Waits until the Raft metrics change (entries from a leader) or [`RECHECK`].
    async fn pause(&self) {
        let mut m = self.raft.metrics();
        // a new receiver may count the current value as unseen, and `changed` would
        // return at once: the loop spun (thousands of rounds a second while waiting)
        m.borrow_and_update();
        let _ = tokio::time::timeout(RECHECK, m.changed()).await;
    }
}

fn list(names: &BTreeSet<String>) -> String {
    let v: Vec<&str> = names.iter().map(String::as_str).collect();
    format!("[{}]", v.join(", "))
}

/// Keeps a link to every member of the metadata group: a node that joined after this
/// transport started is not in `--cluster-peers`; its address is in the membership and
/// its name in the handshake it opened to this node.
pub(crate) async fn keep_links(raft: MetaRaft, net: Transport) {
    let mut metrics = raft.metrics();
    loop {
        let members: Vec<(NodeId, String)> = {
            let m = metrics.borrow_and_update();
            let membership = m.membership_config.membership();
            membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        let known: BTreeSet<NodeId> = net.peers().into_iter().map(|(_, id)| id).collect();
        for (id, addr) in members {
            if id == net.node_id() || known.contains(&id) {
                continue;
            }
            if let Some(name) = net.name_of(id) {
                if net.add_peer(PeerAddr { name, addr }) {
                    tracing::info!(node = id, "opened a link to a member that joined");
                }
            }
        }
        // a name is learnt from a handshake, which changes no metrics: look again later
        if tokio::time::timeout(RECHECK * 5, metrics.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return; // the group stopped
        }
    }
}
