//! Policies and operator policies as RabbitMQ applies them (rabbit_policy,
//! rabbit_policies): what a definition may hold and RabbitMQ's texts for what it may
//! not, which policy applies to a queue or exchange, and how a policy, an operator
//! policy and a queue's declared arguments combine into the arguments it acts on.
//!
//! The rules, checked against RabbitMQ 3.10 and its documentation ("Combining policy
//! definitions and queue arguments"):
//! - of the policies whose `pattern` matches the name and whose `apply-to` covers the
//!   object, the one with the highest `priority` applies, alone; so does one operator
//!   policy;
//! - the effective policy definition is the policy's keys plus the operator policy's,
//!   the smaller number winning where both set a key (operator keys are all numeric);
//! - against a declared `x-` argument, the smaller value wins for `message-ttl`,
//!   `expires`, `max-length`, `max-length-bytes` and `delivery-limit`; the declared
//!   argument wins for `dead-letter-exchange`, `dead-letter-routing-key`, `overflow`
//!   (and for an exchange's `alternate-exchange`).
//!
//! RabbitMQ leaves ties between equal priorities to its table order; here the policy
//! whose name sorts first wins, so the answer is the same on every node and restart.

use crate::args::{int_value, QueueArgs, MAX_MILLIS};
use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use regex::Regex;
use serde_json::{json, Map, Value};

/// A policy or an operator policy (their keys differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/api/policies`: set by policymakers.
    Policy,
    /// `/api/operator-policies`: set by administrators, numeric limits only.
    Operator,
}

/// What a policy applies to. This broker has classic queues only: `classic_queues`
/// matches every queue and `quorum_queues`/`streams` match none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Every queue.
    Queues,
    /// Classic queues (here: every queue).
    ClassicQueues,
    /// Quorum queues (none here).
    QuorumQueues,
    /// Streams (none here).
    Streams,
    /// Exchanges.
    Exchanges,
    /// Queues and exchanges.
    All,
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A (classic) queue.
    Queue,
    /// An exchange.
    Exchange,
}

impl ApplyTo {
    fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            "queues" => ApplyTo::Queues,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            "exchanges" => ApplyTo::Exchanges,
            "all" => ApplyTo::All,
            _ => return None,
        })
    }

    /// The name as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::ClassicQueues => "classic_queues",
            ApplyTo::QuorumQueues => "quorum_queues",
            ApplyTo::Streams => "streams",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
    }

    fn covers(self, t: Target) -> bool {
        matches!(
            (self, t),
            (ApplyTo::All, _)
                | (ApplyTo::Exchanges, Target::Exchange)
                | (ApplyTo::Queues | ApplyTo::ClassicQueues, Target::Queue)
        )
    }
}

/// One policy, checked.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its vhost.
    pub vhost: String,
    /// Its name.
    pub name: String,
    /// The regex names are matched against.
    pub pattern: String,
    regex: Regex,
    /// What it applies to.
    pub apply_to: ApplyTo,
    /// Higher wins.
    pub priority: i64,
    /// The keys and values.
    pub definition: Map<String, Value>,
}

/// Keys whose smaller value wins against a declared argument or an operator policy.
const MIN_KEYS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "consumer-timeout",
];

/// Keys an operator policy may set (RabbitMQ 3.10's list).
const OPERATOR_KEYS: &[&str] = &[
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
    "max-in-memory-length",
    "max-in-memory-bytes",
];

/// Keys a policy may set: those the broker acts on, then those RabbitMQ accepts that
/// have no effect here (queue modes and versions, quorum-only limits, locators).
const POLICY_KEYS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "delivery-limit",
    "consumer-timeout",
    "alternate-exchange",
    "schema",
    "schema-invalid-exchange",
    "schema-require-json",
    "queue-mode",
    "queue-version",
    "queue-master-locator",
    "queue-leader-locator",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "max-age",
    "stream-max-segment-size-bytes",
    "delayed-retry-type",
    "delayed-retry-min",
    "delayed-retry-max",
    "delayed-retry-multiplier",
    "delayed-retry-jitter",
];

/// A value as Erlang's `~p` prints the decoded JSON (RabbitMQ's texts show it so).
pub fn erl_term(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("<<{s:?}>>"),
        Value::Array(a) => format!("[{}]", a.iter().map(erl_term).collect::<Vec<_>>().join(",")),
        Value::Object(m) => {
            let kv: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("<<{k:?}>> => {}", erl_term(v)))
                .collect();
            format!("#{{{}}}", kv.join(","))
        }
    }
}

fn failed(why: String) -> String {
    format!("Validation failed\n\n{why}\n")
}

/// Checks one key's value; `Err` is RabbitMQ's sentence.
fn check_value(key: &str, v: &Value) -> Result<(), String> {
    let int_at_least = |min: i64| v.as_i64().is_some_and(|i| i >= min);
    let (ok, what) = match key {
        "message-ttl" => (int_at_least(0), "is not a valid message TTL"),
        "expires" => (int_at_least(1), "is not a valid queue expiry"),
        "max-length" => (int_at_least(0), "is not a valid maximum length"),
        "max-length-bytes" => (int_at_least(0), "is not a valid maximum length in bytes"),
        "delivery-limit" => (int_at_least(0), "is not a valid delivery limit"),
        "consumer-timeout" => (int_at_least(0), "is not a valid consumer timeout"),
        "delayed-retry-type" => (
            matches!(v.as_str(), Some("disabled" | "all" | "failed" | "returned")),
            "is not a valid delayed retry type",
        ),
        "delayed-retry-min" | "delayed-retry-max" => (
            v.as_i64()
                .is_some_and(|i| (1..=MAX_MILLIS as i64).contains(&i)),
            "is not a valid delay",
        ),
        "delayed-retry-multiplier" => (int_at_least(1), "is not a valid multiplier"),
        "delayed-retry-jitter" => (
            v.as_i64().is_some_and(|i| (0..=100).contains(&i)),
            "is not a valid jitter percentage",
        ),
        "max-in-memory-length" | "max-in-memory-bytes" => {
            (int_at_least(0), "is not a valid maximum memory in bytes")
        }
        "overflow" => (
            matches!(
                v.as_str(),
                Some("drop-head" | "reject-publish" | "reject-publish-dlx")
            ),
            "is not a valid overflow value",
        ),
        "dead-letter-exchange" => (v.is_string(), "is not a valid dead letter exchange name"),
        "dead-letter-routing-key" => (v.is_string(), "is not a valid dead letter routing key"),
        "alternate-exchange" => (v.is_string(), "is not a valid alternate exchange name"),
        "schema" => (v.is_string(), "is not a valid schema name"),
        "schema-invalid-exchange" => (v.is_string(), "is not a valid exchange name"),
        "schema-require-json" => (v.is_boolean(), "is not a valid boolean"),
        "max-age" => (
            v.as_str()
                .and_then(crate::queue_type::stream::parse_age)
                .is_some(),
            "is not a valid max age",
        ),
        "stream-max-segment-size-bytes" => (
            v.as_i64().is_some_and(|i| {
                (0..=crate::queue_type::stream::MAX_SEGMENT_BYTES as i64).contains(&i)
            }),
            "is not a valid segment size",
        ),
        "queue-mode" => (
            matches!(v.as_str(), Some("default" | "lazy")),
            "is not a valid queue-mode value",
        ),
        "queue-version" => (
            matches!(v.as_i64(), Some(1 | 2)),
            "is not a valid queue-version value",
        ),
        "queue-leader-locator" => (
            matches!(
                v.as_str(),
                Some("client-local" | "balanced" | "random" | "least-leaders")
            ),
            "is not a valid queue leader locator value",
        ),
        _ => (v.is_string(), "invalid queue-master-locator value"),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{} {what}", erl_term(v)))
    }
}

/// Checks a definition: not empty, known keys only, good values.
fn check_definition(kind: Kind, d: &Map<String, Value>) -> Result<(), String> {
    if d.is_empty() {
        return Err(failed("no policy provided".into()));
    }
    let allowed = match kind {
        Kind::Policy => POLICY_KEYS,
        Kind::Operator => OPERATOR_KEYS,
    };
    let mut unknown: Vec<(&String, &Value)> = d
        .iter()
        .filter(|(k, _)| !allowed.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_by(|a, b| a.0.cmp(b.0));
        let items: Vec<String> = unknown
            .iter()
            .map(|(k, v)| format!("{{<<{k:?}>>,{}}}", erl_term(v)))
            .collect();
        return Err(failed(format!(
            "[{}] are not recognised policy settings",
            items.join(",")
        )));
    }
    for (k, v) in d {
        check_value(k, v).map_err(failed)?;
    }
    Ok(())
}

impl Policy {
    /// Reads a PUT body (`pattern`, `definition`, optional `priority` and `apply-to`);
    /// `Err` is the reason RabbitMQ answers with 400.
    pub fn parse(kind: Kind, vhost: &str, name: &str, body: &Value) -> Result<Policy, String> {
        let pattern = body
            .get("pattern")
            .ok_or("[{key_missing,pattern}]".to_string())?;
        let definition = body
            .get("definition")
            .ok_or("[{key_missing,definition}]".to_string())?;
        let Value::String(pattern) = pattern else {
            return Err(failed(format!(
                "pattern should be a binary but was {}",
                erl_term(pattern)
            )));
        };
        let regex = Regex::new(pattern).map_err(|e| {
            failed(format!(
                "pattern should be regular expression but is invalid: {}",
                e.to_string().replace('\n', " ")
            ))
        })?;
        let priority = match body.get("priority") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().ok_or_else(|| {
                failed(format!(
                    "priority should be a number, actually was {}",
                    erl_term(v)
                ))
            })?,
        };
        let apply_to = match body.get("apply-to") {
            None | Some(Value::Null) => ApplyTo::All,
            Some(v) => v.as_str().and_then(ApplyTo::parse).ok_or_else(|| {
                failed(format!(
                    "apply-to '{}' unrecognised; should be 'queues', 'classic_queues', 'quorum_queues', 'streams', 'exchanges', or 'all'",
                    v.as_str().map_or_else(|| erl_term(v), str::to_owned)
                ))
            })?,
        };
        let Value::Object(definition) = definition else {
            return Err(failed(format!(
                "definition should be a JSON object but was {}",
                erl_term(definition)
            )));
        };
        check_definition(kind, definition)?;
        Ok(Policy {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
            pattern: pattern.clone(),
            regex,
            apply_to,
            priority,
            definition: definition.clone(),
        })
    }

    /// Whether it applies to an object of this name and kind.
    pub fn matches(&self, name: &str, target: Target) -> bool {
        self.apply_to.covers(target) && self.regex.is_match(name)
    }

    /// The API's (and the definitions export's) view.
    pub fn to_json(&self) -> Value {
        json!({
            "vhost": self.vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to.as_str(),
            "definition": self.definition,
            "priority": self.priority,
        })
    }
}

/// The policy that applies to `name`: the highest priority among those that match,
/// the first name on a tie.
pub fn select<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    name: &str,
    target: Target,
) -> Option<&'a Policy> {
    policies
        .into_iter()
        .filter(|p| p.matches(name, target))
        .min_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)))
}

/// The smaller of two numbers, or `a` when either is not one.
fn min_value(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) if y < x => b.clone(),
        _ => a.clone(),
    }
}

/// The effective policy definition (RabbitMQ's `effective_policy_definition`): the
/// policy's keys, then the operator policy's, the smaller number winning where both
/// set one.
pub fn effective_definition(policy: Option<&Policy>, op: Option<&Policy>) -> Map<String, Value> {
    let mut out = policy.map(|p| p.definition.clone()).unwrap_or_default();
    for (k, v) in op.map(|p| p.definition.iter()).into_iter().flatten() {
        let merged = match out.get(k) {
            Some(cur) if MIN_KEYS.contains(&k.as_str()) => min_value(cur, v),
            Some(cur) => cur.clone(),
            None => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

/// Policy keys that become queue arguments (`x-` + key).
const QUEUE_KEYS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "delivery-limit",
    "delayed-retry-type",
    "delayed-retry-min",
    "delayed-retry-max",
    "delayed-retry-multiplier",
    "delayed-retry-jitter",
];

/// Policy keys that become a stream's arguments (a stream refuses the others as
/// arguments; RabbitMQ's streams ignore them in policies).
const STREAM_KEYS: &[&str] = &[
    "max-length-bytes",
    "max-age",
    "stream-max-segment-size-bytes",
];

/// Whether the policy's value of a key a stream takes the smaller of is smaller than
/// the declared one (`max-age` compares as durations).
fn smaller(key: &str, declared: &AMQPValue, policy: &AMQPValue) -> bool {
    if key == "max-age" {
        let age = |v: &AMQPValue| {
            crate::args::str_value(v).and_then(|s| crate::queue_type::stream::parse_age(&s))
        };
        return matches!((age(declared), age(policy)), (Some(a), Some(b)) if b < a);
    }
    matches!((int_value(declared), int_value(policy)), (Some(a), Some(b)) if b < a)
}

fn to_amqp(key: &str, v: &Value) -> Option<AMQPValue> {
    match v {
        Value::String(s) => Some(AMQPValue::LongString(LongString::from(s.as_str()))),
        Value::Number(n) => {
            let i = n.as_i64()?;
            // the store keeps ten years at most; a longer TTL behaves the same
            let cap = matches!(key, "message-ttl" | "expires").then_some(MAX_MILLIS as i64);
            Some(AMQPValue::LongLongInt(cap.map_or(i, |c| i.min(c))))
        }
        _ => None,
    }
}

/// The arguments a queue acts on: its declared arguments combined with its effective
/// policy definition by RabbitMQ's per-key rules (module doc). The declared arguments
/// were checked at declare; a combination the queue type would refuse (a policy's
/// dead-letter routing key without any dead-letter exchange) drops the policy's part.
pub fn queue_args(
    declared: &FieldTable,
    effective: &Map<String, Value>,
    queue: &str,
    vhost: &str,
) -> Result<QueueArgs, AmqpError> {
    let mut merged = declared.clone();
    let stream = crate::queue_type::of_arguments(declared).name() == "stream";
    let keys = if stream { STREAM_KEYS } else { QUEUE_KEYS };
    for key in keys {
        let Some(v) = effective.get(*key).and_then(|v| to_amqp(key, v)) else {
            continue;
        };
        let xkey = format!("x-{key}");
        let value = match declared.inner().get(xkey.as_str()) {
            None => v,
            Some(d) if MIN_KEYS.contains(key) || *key == "max-age" => {
                if !smaller(key, d, &v) {
                    continue;
                }
                v
            }
            Some(_) => continue,
        };
        merged.insert(xkey.into(), value);
    }
    let dlx = "x-dead-letter-exchange";
    let dlrk = "x-dead-letter-routing-key";
    if !merged.inner().contains_key(dlx) && !declared.inner().contains_key(dlrk) {
        let mut without = FieldTable::default();
        for (k, v) in merged.inner().iter().filter(|(k, _)| k.as_str() != dlrk) {
            without.insert(k.clone(), v.clone());
        }
        merged = without;
    }
    let mut args = match QueueArgs::parse(&merged, queue, vhost) {
        Ok(a) => a,
        // the policy's back-off does not fit the declared one (its max under the
        // declared min): the declared arguments hold
        Err(_) => QueueArgs::parse(&without_policy_retry(&merged, declared), queue, vhost)?,
    };
    args.consumer_timeout = effective
        .get("consumer-timeout")
        .and_then(Value::as_u64)
        .filter(|t| *t > 0);
    Ok(args)
}

/// `merged` without the delayed-retry arguments a policy added.
fn without_policy_retry(merged: &FieldTable, declared: &FieldTable) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in merged.inner().iter() {
        let from_policy = !declared.inner().contains_key(k.as_str());
        if !(from_policy && crate::queue::retry::RETRY_ARGS.contains(&k.as_str())) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The alternate exchange of an exchange: its declared argument, else its policy's.
pub fn alternate_exchange(
    declared: Option<String>,
    effective: &Map<String, Value>,
) -> Option<String> {
    declared.or_else(|| {
        effective
            .get("alternate-exchange")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
