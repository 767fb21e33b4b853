//! Bindings of one exchange and the pure route function of each exchange type.
//!
//! An exchange actor owns a [`Bindings`] value, changes it on bind and unbind, and
//! publishes an immutable copy; channels call [`Bindings::route`] on that copy, so routing
//! needs no lock and no message to the exchange.

use crate::headers;
use crate::topic::TopicTrie;
use amq_protocol::types::FieldTable;
use std::collections::HashMap;
use std::sync::Arc;

/// The four exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every bound destination.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Header values, by `x-match`.
    Headers,
}

impl ExchangeKind {
    /// Parses the type named in exchange.declare.
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        match s {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A queue, by name.
    Queue(Arc<str>),
    /// Another exchange (exchange-to-exchange binding), by name.
    Exchange(Arc<str>),
}

/// One binding from this exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Where messages go.
    pub destination: Destination,
    /// The binding key.
    pub routing_key: Arc<str>,
    /// Binding arguments (used by headers exchanges, and part of a binding's identity).
    pub arguments: FieldTable,
}

/// The bindings of one exchange with an index for its type.
#[derive(Debug, Clone)]
pub struct Bindings {
    kind: ExchangeKind,
    all: Vec<Binding>,
    direct: HashMap<Arc<str>, Vec<Destination>>,
    topic: TopicTrie<Destination>,
}

impl Bindings {
    /// No bindings, for an exchange of `kind`.
    pub fn new(kind: ExchangeKind) -> Self {
        Self {
            kind,
            all: Vec::new(),
            direct: HashMap::new(),
            topic: TopicTrie::default(),
        }
    }

    /// The exchange type.
    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Every binding, in the order they were made.
    pub fn all(&self) -> &[Binding] {
        &self.all
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Adds a binding; returns false if an identical one existed (bind is idempotent).
    pub fn add(&mut self, b: Binding) -> bool {
        if self.all.contains(&b) {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => {
                let v = self.direct.entry(b.routing_key.clone()).or_default();
                if !v.contains(&b.destination) {
                    v.push(b.destination.clone());
                }
            }
            ExchangeKind::Topic => self.topic.insert(&b.routing_key, b.destination.clone()),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        self.all.push(b);
        true
    }

    /// Removes a binding; returns false if there was no such binding.
    pub fn remove(&mut self, b: &Binding) -> bool {
        let Some(pos) = self.all.iter().position(|x| x == b) else {
            return false;
        };
        self.all.remove(pos);
        self.reindex_key(&b.routing_key, &b.destination);
        true
    }

    /// Removes every binding to `dest` (its queue or exchange was deleted). Returns how
    /// many were removed.
    pub fn remove_destination(&mut self, dest: &Destination) -> usize {
        let gone: Vec<Binding> = self
            .all
            .iter()
            .filter(|b| &b.destination == dest)
            .cloned()
            .collect();
        self.all.retain(|b| &b.destination != dest);
        for b in &gone {
            self.reindex_key(&b.routing_key, &b.destination);
        }
        gone.len()
    }

    fn reindex_key(&mut self, key: &Arc<str>, dest: &Destination) {
        // another binding with the same key and destination but other arguments keeps it
        let still = self
            .all
            .iter()
            .any(|x| &x.routing_key == key && &x.destination == dest);
        if still {
            return;
        }
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get_mut(key) {
                    v.retain(|d| d != dest);
                    if v.is_empty() {
                        self.direct.remove(key);
                    }
                }
            }
            ExchangeKind::Topic => self.topic.remove(key, dest),
            _ => {}
        }
    }

    /// Appends the destinations a message with this routing key and headers goes to.
    pub fn route(
        &self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Destination>,
    ) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get(routing_key) {
                    out.extend(v.iter().cloned());
                }
            }
            ExchangeKind::Fanout => {
                for b in &self.all {
                    if !out.contains(&b.destination) {
                        out.push(b.destination.clone());
                    }
                }
            }
            ExchangeKind::Topic => self.topic.matches(routing_key, out),
            ExchangeKind::Headers => {
                for b in &self.all {
                    if headers::matches(&b.arguments, headers) && !out.contains(&b.destination) {
                        out.push(b.destination.clone());
                    }
                }
            }
        }
    }

    /// Whether the route depends on message headers (and so cannot be cached by key).
    pub fn routes_by_headers(&self) -> bool {
        self.kind == ExchangeKind::Headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: &str) -> Destination {
        Destination::Queue(n.into())
    }

    fn bind(key: &str, d: Destination) -> Binding {
        Binding {
            destination: d,
            routing_key: key.into(),
            arguments: FieldTable::default(),
        }
    }

    #[test]
    fn direct_routes_by_key() {
        let mut b = Bindings::new(ExchangeKind::Direct);
        b.add(bind("k", q("a")));
        b.add(bind("k", q("b")));
        b.add(bind("other", q("c")));
        let mut out = vec![];
        b.route("k", None, &mut out);
        assert_eq!(out, vec![q("a"), q("b")]);
        b.remove(&bind("k", q("a")));
        out.clear();
        b.route("k", None, &mut out);
        assert_eq!(out, vec![q("b")]);
    }

    #[test]
    fn fanout_ignores_key_and_dedups() {
        let mut b = Bindings::new(ExchangeKind::Fanout);
        b.add(bind("x", q("a")));
        b.add(bind("y", q("a")));
        b.add(bind("", q("b")));
        let mut out = vec![];
        b.route("whatever", None, &mut out);
        assert_eq!(out, vec![q("a"), q("b")]);
        assert_eq!(b.remove_destination(&q("a")), 2);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn bind_is_idempotent() {
        let mut b = Bindings::new(ExchangeKind::Topic);
        assert!(b.add(bind("a.*", q("a"))));
        assert!(!b.add(bind("a.*", q("a"))));
        assert_eq!(b.len(), 1);
    }
}
