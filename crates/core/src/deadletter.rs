//! Dead-lettering decisions: the headers a dead-lettered copy carries (x-death and the
//! x-first-death-* / x-last-death-* headers), where it goes, and RabbitMQ's cycle rule.
//!
//! A message dies in a queue for one of four reasons; the queue republishes a copy
//! through its dead-letter exchange (or the broker's `amq.dead-letter`). Each death adds
//! or updates one entry of the `x-death` array: entries are keyed by (queue, reason); a
//! repeated death increments `count` and moves the entry to the front.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

/// The exchange every vhost has for dead letters of queues that name none.
pub const DEAD_LETTER_EXCHANGE: &str = "amq.dead-letter";

/// Why a message died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// A length limit dropped or refused it.
    Maxlen,
    /// It was returned more often than x-delivery-limit allows.
    DeliveryLimit,
}

impl Reason {
    /// The name x-death uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Where a dead letter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Exchange to publish through.
    pub exchange: String,
    /// Routing keys to publish with.
    pub routing_keys: Vec<String>,
    /// Whether this is the implicit `amq.dead-letter` (which never routes a message back
    /// to the queue it died in).
    pub implicit: bool,
}

/// Decides the exchange and routing keys for a dead letter of `queue`: its own
/// x-dead-letter-exchange if set (with x-dead-letter-routing-key, else the message's
/// routing keys), otherwise `amq.dead-letter` with the queue's name as routing key.
pub fn target(
    queue: &str,
    dlx: Option<&str>,
    dlrk: Option<&str>,
    original_keys: &[String],
) -> Target {
    match dlx {
        Some(x) => Target {
            exchange: x.to_owned(),
            routing_keys: match dlrk {
                Some(k) => vec![k.to_owned()],
                None => original_keys.to_vec(),
            },
            implicit: false,
        },
        None => Target {
            exchange: DEAD_LETTER_EXCHANGE.to_owned(),
            routing_keys: vec![queue.to_owned()],
            implicit: true,
        },
    }
}

/// Whose dead letters a binding from `amq.dead-letter` delivers, for the permission check
/// at bind: the exchange's routing key is the source queue's name, so a key without
/// wildcards reaches exactly that queue's dead letters, and a key with a `*` or `#` word
/// may reach any queue's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach<'a> {
    /// The dead letters of the queue of this name.
    Queue(&'a str),
    /// The dead letters of any queue in the vhost.
    AnyQueue,
}

/// What a binding key on `amq.dead-letter` reaches (see [`Reach`]). Topic wildcards are
/// whole words only, as the topic exchange reads them.
pub fn binding_reach(key: &str) -> Reach<'_> {
    if key.split('.').any(|w| w == "*" || w == "#") {
        Reach::AnyQueue
    } else {
        Reach::Queue(key)
    }
}

/// The routing keys a message was published with: its routing key and any CC header.
pub fn original_routing_keys(routing_key: &str, props: &AMQPProperties) -> Vec<String> {
    let mut keys = vec![routing_key.to_owned()];
    if let Some(h) = props.headers() {
        if let Some(AMQPValue::FieldArray(cc)) = h.inner().get("CC") {
            for v in cc.as_slice() {
                if let Some(s) = crate::args::str_value(v) {
                    keys.push(s);
                }
            }
        }
    }
    keys
}

fn longstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn lookup_str<'a>(t: &'a FieldTable, k: &str) -> Option<&'a [u8]> {
    match t.inner().get(k) {
        Some(AMQPValue::LongString(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

/// What the dying message was.
#[derive(Debug, Clone, Copy)]
pub struct Death<'a> {
    /// Why it died.
    pub reason: Reason,
    /// The queue it died in.
    pub queue: &'a str,
    /// The exchange it had been published to.
    pub exchange: &'a str,
    /// The routing keys it had been published with.
    pub routing_keys: &'a [String],
    /// Now, in seconds since the epoch.
    pub time: u64,
    /// The queue has its own dead-letter routing key: the CC header goes (its keys no
    /// longer apply), as in RabbitMQ.
    pub new_routing_key: bool,
}

/// The properties of the dead-lettered copy: x-death updated, x-first-death-* set once,
/// x-last-death-* set each time, and `expiration` moved into x-death's
/// original-expiration (so the copy does not expire again on its way).
pub fn dead_letter_properties(props: &AMQPProperties, death: &Death<'_>) -> AMQPProperties {
    let mut map = props.headers().clone().unwrap_or_default().inner().clone();
    if death.new_routing_key {
        map.remove("CC");
    }
    map.remove("BCC");
    let mut headers = FieldTable::from(map);
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let reason = death.reason.as_str();
    let existing = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => {
            lookup_str(t, "queue") == Some(death.queue.as_bytes())
                && lookup_str(t, "reason") == Some(reason.as_bytes())
        }
        _ => false,
    });
    let entry = match existing {
        Some(i) => {
            let mut t = match deaths.remove(i) {
                AMQPValue::FieldTable(t) => t,
                _ => FieldTable::default(),
            };
            let count = match t.inner().get("count") {
                Some(v) => crate::args::int_value(v).unwrap_or(0),
                None => 0,
            };
            t.insert(
                "count".into(),
                AMQPValue::LongLongInt(i64::try_from(count + 1).unwrap_or(i64::MAX)),
            );
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), longstr(reason));
            t.insert("queue".into(), longstr(death.queue));
            t.insert("time".into(), AMQPValue::Timestamp(death.time));
            t.insert("exchange".into(), longstr(death.exchange));
            let keys: Vec<AMQPValue> = death.routing_keys.iter().map(|k| longstr(k)).collect();
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(keys)),
            );
            if let Some(exp) = props.expiration() {
                t.insert("original-expiration".into(), longstr(exp.as_str()));
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    for (first, last, v) in [
        (
            "x-first-death-reason",
            "x-last-death-reason",
            longstr(reason),
        ),
        (
            "x-first-death-queue",
            "x-last-death-queue",
            longstr(death.queue),
        ),
        (
            "x-first-death-exchange",
            "x-last-death-exchange",
            longstr(death.exchange),
        ),
    ] {
        if !headers.inner().contains_key(first) {
            headers.insert(first.into(), v.clone());
        }
        headers.insert(last.into(), v);
    }
    clear_expiration(props.clone().with_headers(headers))
}

fn clear_expiration(p: AMQPProperties) -> AMQPProperties {
    // AMQPProperties has no setter that unsets, so rebuild it without the field
    let mut out = AMQPProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// RabbitMQ's cycle rule: a dead letter is not delivered to `queue` if it already died
/// there and every death since then (that one included) was automatic (no rejection).
/// `props` are the dead-lettered copy's properties (with this death already recorded).
pub fn is_cycle(props: &AMQPProperties, queue: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    else {
        return false;
    };
    let deaths = deaths.as_slice();
    let Some(pos) = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => lookup_str(t, "queue") == Some(queue.as_bytes()),
        _ => false,
    }) else {
        return false;
    };
    deaths[..=pos].iter().all(|d| match d {
        AMQPValue::FieldTable(t) => lookup_str(t, "reason") != Some(b"rejected"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death<'a>(reason: Reason, queue: &'a str, keys: &'a [String]) -> Death<'a> {
        Death {
            reason,
            queue,
            exchange: "ex",
            routing_keys: keys,
            time: 1_700_000_000,
            new_routing_key: false,
        }
    }

    fn x_death(p: &AMQPProperties) -> Vec<FieldTable> {
        match p.headers().as_ref().unwrap().inner().get("x-death") {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| match v {
                    AMQPValue::FieldTable(t) => t.clone(),
                    _ => panic!(),
                })
                .collect(),
            _ => panic!("no x-death"),
        }
    }

    #[test]
    fn first_death_records_everything_and_moves_expiration() {
        let keys = vec!["rk".to_owned()];
        let p = AMQPProperties::default()
            .with_expiration("500".into())
            .with_content_type("text/plain".into());
        let d = dead_letter_properties(&p, &death(Reason::Expired, "q", &keys));
        assert!(d.expiration().is_none());
        assert_eq!(d.content_type().as_ref().unwrap().as_str(), "text/plain");
        let xd = x_death(&d);
        assert_eq!(xd.len(), 1);
        let t = xd[0].inner();
        assert_eq!(t.get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(t.get("reason"), Some(&longstr("expired")));
        assert_eq!(t.get("queue"), Some(&longstr("q")));
        assert_eq!(t.get("exchange"), Some(&longstr("ex")));
        assert_eq!(t.get("original-expiration"), Some(&longstr("500")));
        assert_eq!(t.get("time"), Some(&AMQPValue::Timestamp(1_700_000_000)));
        let h = d.headers().clone().unwrap();
        assert_eq!(
            h.inner().get("x-first-death-reason"),
            Some(&longstr("expired"))
        );
        assert_eq!(h.inner().get("x-last-death-queue"), Some(&longstr("q")));
    }

    #[test]
    fn repeated_deaths_count_up_and_move_to_the_front() {
        let keys = vec!["rk".to_owned()];
        let p = AMQPProperties::default();
        let a = dead_letter_properties(&p, &death(Reason::Rejected, "q1", &keys));
        let b = dead_letter_properties(&a, &death(Reason::Expired, "q2", &keys));
        let c = dead_letter_properties(&b, &death(Reason::Rejected, "q1", &keys));
        let xd = x_death(&c);
        assert_eq!(xd.len(), 2);
        assert_eq!(xd[0].inner().get("queue"), Some(&longstr("q1")));
        assert_eq!(xd[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(xd[1].inner().get("queue"), Some(&longstr("q2")));
        let h = c.headers().clone().unwrap();
        assert_eq!(h.inner().get("x-first-death-queue"), Some(&longstr("q1")));
        assert_eq!(
            h.inner().get("x-first-death-reason"),
            Some(&longstr("rejected"))
        );
        assert_eq!(
            h.inner().get("x-last-death-reason"),
            Some(&longstr("rejected"))
        );
    }

    #[test]
    fn automatic_cycles_are_detected_rejections_break_them() {
        let keys = vec!["rk".to_owned()];
        let p = AMQPProperties::default();
        let once = dead_letter_properties(&p, &death(Reason::Expired, "q", &keys));
        assert!(is_cycle(&once, "q"), "expired in q, routed back to q");
        assert!(!is_cycle(&once, "other"));
        let rejected = dead_letter_properties(&p, &death(Reason::Rejected, "q", &keys));
        assert!(!is_cycle(&rejected, "q"), "a rejection is not automatic");
    }

    #[test]
    fn binding_keys_reach_one_queue_or_any() {
        assert_eq!(binding_reach("orders"), Reach::Queue("orders"));
        assert_eq!(binding_reach("a.b*c.d"), Reach::Queue("a.b*c.d"));
        for k in ["#", "*", "orders.#", "*.x", "a.*.b"] {
            assert_eq!(binding_reach(k), Reach::AnyQueue, "{k}");
        }
    }

    #[test]
    fn targets() {
        let keys = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(target("q", Some("dlx"), None, &keys).routing_keys, keys);
        assert_eq!(
            target("q", Some("dlx"), Some("k"), &keys).routing_keys,
            vec!["k"]
        );
        let t = target("q", None, None, &keys);
        assert_eq!(
            (t.exchange.as_str(), t.implicit),
            (DEAD_LETTER_EXCHANGE, true)
        );
        assert_eq!(t.routing_keys, vec!["q"]);
    }
}
