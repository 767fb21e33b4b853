//! A route past its first exchange: exchange-to-exchange bindings (each exchange visited
//! once, so a cycle ends) and alternate exchanges (an exchange that routes a message
//! nowhere hands it to its `alternate-exchange`), as RabbitMQ's rabbit_exchange:route.
//!
//! The vhost supplies the lookups (exchange by name, what to do with a queue name), so
//! this stays a pure function the server calls on each route-cache miss and on every
//! headers-exchange publish.

use super::{Bindings, Destination, RouteInput};
use crate::args::str_value;
use amq_protocol::types::FieldTable;
use std::ops::Deref;
use std::sync::Arc;

/// What resolving reads of one exchange: its name, its current bindings, its alternate.
pub trait RouteSource {
    /// The exchange's name.
    fn name(&self) -> &Arc<str>;

    /// Calls `f` with the exchange's current bindings (a snapshot the caller may hold
    /// only for the call).
    fn with_bindings<R>(&self, f: impl FnOnce(&Bindings) -> R) -> R;

    /// The exchange's `alternate-exchange`, if it names one.
    fn alternate(&self) -> Option<String>;
}

/// The `alternate-exchange` argument of an exchange, if it names one (a non-empty string).
pub fn alternate_exchange(args: &FieldTable) -> Option<String> {
    args.inner()
        .get("alternate-exchange")
        .and_then(str_value)
        .filter(|s| !s.is_empty())
}

/// Routes through `first` and on through every exchange the route reaches; calls `queue`
/// for each queue name routed to (possibly more than once: the caller keeps each queue
/// once). `exchange` looks an exchange up by name (`None`: no such exchange, that branch
/// ends). Returns whether the result depends only on the routing key (no headers
/// exchange, nor a consistent-hash one hashing a header or property, was consulted),
/// i.e. may be cached by key.
pub fn resolve<S, X>(
    first: &S,
    msg: &RouteInput<'_>,
    mut exchange: impl FnMut(&str) -> Option<X>,
    mut queue: impl FnMut(&Arc<str>),
) -> bool
where
    S: RouteSource + ?Sized,
    X: Deref<Target = S>,
{
    let mut cacheable = true;
    let mut visited: Vec<Arc<str>> = vec![first.name().clone()];
    let mut dests = Vec::new();
    cacheable &= route_one(first, msg, &mut dests);
    let mut i = 0;
    while i < dests.len() {
        match &dests[i] {
            Destination::Queue(q) => queue(q),
            Destination::Exchange(e) => {
                if !visited.contains(e) {
                    visited.push(e.clone());
                    if let Some(next) = exchange(e) {
                        cacheable &= route_one(&*next, msg, &mut dests);
                    }
                }
            }
        }
        i += 1;
    }
    cacheable
}

/// Routes through one exchange, appending to `dests`; an exchange that adds nothing adds
/// its alternate exchange instead. Returns whether the route is cacheable by key.
fn route_one<S: RouteSource + ?Sized>(
    x: &S,
    msg: &RouteInput<'_>,
    dests: &mut Vec<Destination>,
) -> bool {
    let before = dests.len();
    let by_headers = x.with_bindings(|b| {
        b.route_input(msg, dests);
        b.routes_by_headers()
    });
    if dests.len() == before {
        // unroutable here: the alternate exchange gets it
        if let Some(ae) = x.alternate() {
            dests.push(Destination::Exchange(ae.into()));
        }
    }
    !by_headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Binding, ExchangeKind};
    use amq_protocol::types::{AMQPValue, LongString, ShortString};
    use std::collections::HashMap;

    struct X {
        name: Arc<str>,
        bindings: Bindings,
        arguments: FieldTable,
    }

    impl RouteSource for X {
        fn name(&self) -> &Arc<str> {
            &self.name
        }
        fn with_bindings<R>(&self, f: impl FnOnce(&Bindings) -> R) -> R {
            f(&self.bindings)
        }
        fn alternate(&self) -> Option<String> {
            alternate_exchange(&self.arguments)
        }
    }

    #[derive(Default)]
    struct VHost(HashMap<String, Arc<X>>);

    impl VHost {
        /// An exchange with bindings `(key, destination)`, `qname` or `>xname`.
        fn add(&mut self, name: &str, kind: ExchangeKind, binds: &[(&str, &str)], ae: &str) {
            let mut bindings = Bindings::new(kind);
            for (key, d) in binds {
                let destination = match d.strip_prefix('>') {
                    Some(x) => Destination::Exchange(x.into()),
                    None => Destination::Queue((*d).into()),
                };
                bindings.add(Binding {
                    destination,
                    routing_key: (*key).into(),
                    arguments: FieldTable::default(),
                });
            }
            let mut arguments = FieldTable::default();
            if !ae.is_empty() {
                let v = AMQPValue::LongString(LongString::from(ae));
                arguments.insert(ShortString::from("alternate-exchange"), v);
            }
            let x = X {
                name: name.into(),
                bindings,
                arguments,
            };
            self.0.insert(name.to_string(), Arc::new(x));
        }

        fn route(&self, from: &str, key: &str) -> (Vec<String>, bool) {
            let mut out = Vec::new();
            let first = &self.0[from];
            let cacheable = resolve(
                &**first,
                &RouteInput::new(key, None),
                |e| self.0.get(e).cloned(),
                |q| out.push(q.to_string()),
            );
            (out, cacheable)
        }
    }

    #[test]
    fn exchange_to_exchange_bindings_are_followed_each_exchange_once() {
        let mut v = VHost::default();
        v.add("a", ExchangeKind::Direct, &[("k", "qa"), ("k", ">b")], "");
        v.add(
            "b",
            ExchangeKind::Fanout,
            &[("", "qb"), ("", ">a"), ("", ">c")],
            "",
        );
        v.add("c", ExchangeKind::Topic, &[("#", "qa"), ("#", ">b")], "");
        let (mut qs, cacheable) = v.route("a", "k");
        assert!(cacheable);
        qs.sort();
        // the topic trie leaves out what the route already holds; the caller dedups the rest
        assert_eq!(qs, ["qa", "qb"]);
    }

    #[test]
    fn an_unroutable_message_goes_to_the_alternate_exchange_at_any_hop() {
        let mut v = VHost::default();
        v.add("a", ExchangeKind::Direct, &[("k", ">b")], "ae1");
        v.add("b", ExchangeKind::Direct, &[("other", "qb")], "ae2");
        v.add("ae1", ExchangeKind::Fanout, &[("", "q1")], "");
        v.add("ae2", ExchangeKind::Fanout, &[("", "q2")], "");
        assert_eq!(v.route("a", "nope").0, ["q1"]);
        assert_eq!(v.route("a", "k").0, ["q2"]);
    }

    #[test]
    fn missing_exchanges_end_their_branch() {
        let mut v = VHost::default();
        v.add("a", ExchangeKind::Fanout, &[("", ">gone"), ("", "q")], "");
        v.add("b", ExchangeKind::Direct, &[], "gone-too");
        assert_eq!(v.route("a", "k").0, ["q"]);
        assert!(v.route("b", "k").0.is_empty());
    }

    #[test]
    fn a_headers_exchange_on_the_way_makes_the_route_uncacheable() {
        let mut v = VHost::default();
        v.add("a", ExchangeKind::Direct, &[("k", ">h")], "");
        v.add("h", ExchangeKind::Headers, &[("", "q")], "");
        assert_eq!(v.route("a", "k"), (vec!["q".to_string()], false));
        assert_eq!(v.route("a", "other"), (vec![], true));
    }

    #[test]
    fn an_empty_or_non_string_alternate_exchange_is_none() {
        let mut t = FieldTable::default();
        assert_eq!(alternate_exchange(&t), None);
        t.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        assert_eq!(alternate_exchange(&t), None);
        t.insert("alternate-exchange".into(), AMQPValue::LongInt(1));
        assert_eq!(alternate_exchange(&t), None);
        t.insert(
            "alternate-exchange".into(),
            AMQPValue::ShortString("ae".into()),
        );
        assert_eq!(alternate_exchange(&t).as_deref(), Some("ae"));
    }
}
