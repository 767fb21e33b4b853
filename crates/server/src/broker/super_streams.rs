//! Partitioned streams (RabbitMQ's super streams): one durable direct exchange whose
//! argument `x-super-stream: true` marks it, and N durable streams bound to it, each
//! with its routing key and the binding argument `x-stream-partition-order` (0..N-1).
//!
//! Nothing here is new machinery: the exchange, the streams and the bindings are made
//! and removed through `topology.rs`, so they are durable, recovered at start, in the
//! definitions export and visible in the API like any other. What this module adds is
//! RabbitMQ's stream manager's rules (`rabbit_stream_manager:create_super_stream`):
//! the names of the partitions, the checks made before anything is created, and the
//! rollback of what was created when a later step fails.

use crate::broker::vhost::{ExchangeSpec, QueueSpec, VHost};
use broker_core::routing::{Destination, ExchangeKind};
use broker_core::AmqpError;
use broker_wire::types::{AMQPValue, FieldTable};
use std::collections::HashSet;
use std::sync::Arc;

/// The exchange argument that marks a super stream.
pub const SUPER_STREAM_ARG: &str = "x-super-stream";

/// The binding argument that orders a super stream's partitions.
pub const ORDER_ARG: &str = "x-stream-partition-order";

/// The most partitions a super stream may have (RabbitMQ 4.x's default
/// `max_super_stream_partitions`): each is a stream with its own files and actor.
pub const MAX_PARTITIONS: usize = 1000;

/// What a super stream's partitions keep, given to every partition as stream arguments
/// (RabbitMQ's `--max-age`, `--max-length-bytes`, `--stream-max-segment-size-bytes`,
/// `--leader-locator`, `--initial-cluster-size`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionArgs {
    /// `x-max-age`, e.g. `7D` (checked by the stream queue type).
    pub max_age: Option<String>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-stream-max-segment-size-bytes`.
    pub segment_bytes: Option<u64>,
    /// `x-queue-leader-locator`; RabbitMQ sets `balanced` when none is given.
    pub leader_locator: Option<String>,
    /// `x-initial-cluster-size` (accepted and kept; this broker is one node).
    pub initial_cluster_size: Option<u64>,
}

impl PartitionArgs {
    /// The queue arguments of each partition, as RabbitMQ's stream manager builds them.
    pub fn table(&self) -> FieldTable {
        let mut t = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(v.into());
        let n = |v: u64| AMQPValue::LongLongInt(i64::try_from(v).unwrap_or(i64::MAX));
        t.insert("x-queue-type".into(), s("stream"));
        let locator = self.leader_locator.as_deref().unwrap_or("balanced");
        t.insert("x-queue-leader-locator".into(), s(locator));
        if let Some(a) = &self.max_age {
            t.insert("x-max-age".into(), s(a));
        }
        if let Some(b) = self.max_length_bytes {
            t.insert("x-max-length-bytes".into(), n(b));
        }
        if let Some(b) = self.segment_bytes {
            t.insert("x-stream-max-segment-size-bytes".into(), n(b));
        }
        if let Some(c) = self.initial_cluster_size {
            t.insert("x-initial-cluster-size".into(), n(c));
        }
        t
    }
}

/// A super stream to create: its name, its partitions (stream name, routing key) in
/// order, and what every partition keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperStreamPlan {
    /// The exchange's name.
    pub name: String,
    /// (partition stream, binding key), in partition order.
    pub partitions: Vec<(String, String)>,
    /// The partitions' stream arguments.
    pub arguments: PartitionArgs,
}

fn invalid(text: impl Into<String>) -> AmqpError {
    AmqpError::precondition_failed(text.into())
}

impl SuperStreamPlan {
    /// `--partitions N`: streams NAME-0 … NAME-(N-1), bound with keys "0" … "N-1".
    pub fn numbered(name: &str, count: i64, arguments: PartitionArgs) -> Result<Self, AmqpError> {
        if count < 1 {
            return Err(invalid("The partition number must be greater than 0"));
        }
        if count > MAX_PARTITIONS as i64 {
            return Err(invalid(format!(
                "The partition number must not exceed {MAX_PARTITIONS}"
            )));
        }
        let keys: Vec<String> = (0..count).map(|k| k.to_string()).collect();
        Self::keyed(name, &keys, arguments)
    }

    /// `--routing-keys a,b`: streams NAME-a, NAME-b, bound with keys "a", "b" (keys are
    /// trimmed and empty ones dropped, as RabbitMQ's CLI splits them).
    pub fn keyed(name: &str, keys: &[String], arguments: PartitionArgs) -> Result<Self, AmqpError> {
        check_name(name)?;
        let keys: Vec<&str> = keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            return Err(invalid("The number of binding keys must be greater than 0"));
        }
        if keys.len() > MAX_PARTITIONS {
            return Err(invalid(format!(
                "The number of binding keys must not exceed {MAX_PARTITIONS}"
            )));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = keys.iter().find(|k| !seen.insert(**k)) {
            return Err(invalid(format!(
                "Duplicate partition names found: {name}-{dup}"
            )));
        }
        let mut partitions = Vec::with_capacity(keys.len());
        for k in keys {
            let stream = format!("{name}-{k}");
            broker_core::names::check_shortstr(&format!("partition name '{stream}'"), &stream)?;
            partitions.push((stream, k.to_owned()));
        }
        Ok(SuperStreamPlan {
            name: name.to_owned(),
            partitions,
            arguments,
        })
    }
}

/// RabbitMQ's `enforce_correct_name`: not empty, not `amq.`-prefixed (and no line
/// breaks, which RabbitMQ strips silently and this broker refuses).
fn check_name(name: &str) -> Result<(), AmqpError> {
    if name.is_empty() || name.starts_with("amq.") || name.contains(['\r', '\n']) {
        return Err(invalid(format!(
            "'{name}' is not a correct name for a super stream"
        )));
    }
    broker_core::names::check_shortstr("super stream name", name)
}

/// One partition of a listed super stream.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    /// The stream's name.
    pub name: Arc<str>,
    /// The binding key that routes to it.
    pub routing_key: Arc<str>,
    /// Its `x-stream-partition-order`, if the binding has one.
    pub order: Option<i64>,
    /// Its queue arguments.
    pub arguments: FieldTable,
}

/// A super stream as listed: its exchange and its partitions in order.
#[derive(Debug, Clone)]
pub struct SuperStreamInfo {
    /// The exchange's name.
    pub name: Arc<str>,
    /// The partitions, by `x-stream-partition-order` (those without one last).
    pub partitions: Vec<PartitionInfo>,
}

/// Whether an exchange's arguments mark it as a super stream.
pub fn is_super_stream(arguments: &FieldTable) -> bool {
    matches!(
        arguments.inner().get(SUPER_STREAM_ARG),
        Some(AMQPValue::Boolean(true))
    )
}

fn order_of(arguments: &FieldTable) -> Option<i64> {
    let v = arguments.inner().get(ORDER_ARG)?;
    broker_core::args::int_value(v).and_then(|n| i64::try_from(n).ok())
}

impl VHost {
    /// Creates a super stream: checks everything it can first (the vhost's queue
    /// limit, names already taken, the partitions' arguments), then the exchange, the
    /// streams and the bindings; a failure on the way removes what was made.
    pub async fn add_super_stream(&self, plan: &SuperStreamPlan) -> Result<(), AmqpError> {
        self.check_super_stream_free(plan)?;
        let arguments = plan.arguments.table();
        if let Some((first, _)) = plan.partitions.first() {
            let spec = partition_spec(&arguments);
            broker_core::queue_type::validate_declare(&spec.declare(first, &self.name))?;
        }
        let mut x_args = FieldTable::default();
        x_args.insert(SUPER_STREAM_ARG.into(), AMQPValue::Boolean(true));
        self.declare_exchange(
            &plan.name,
            ExchangeSpec {
                kind: ExchangeKind::Direct,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: x_args,
            },
        )
        .await?;
        let mut made: Vec<&str> = Vec::new();
        for (stream, _) in &plan.partitions {
            if let Err(e) = self
                .declare_queue(stream, partition_spec(&arguments), 0)
                .await
            {
                self.roll_back(&plan.name, &made).await;
                return Err(e);
            }
            made.push(stream);
        }
        for (order, (stream, key)) in plan.partitions.iter().enumerate() {
            let mut b_args = FieldTable::default();
            b_args.insert(ORDER_ARG.into(), AMQPValue::LongLongInt(order as i64));
            let dest = Destination::Queue(stream.as_str().into());
            if let Err(e) = self.bind(&plan.name, dest, key, b_args, true).await {
                self.roll_back(&plan.name, &made).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// RabbitMQ's checks before creating: room under the vhost's queue limit, and no
    /// exchange or queue of the names yet.
    fn check_super_stream_free(&self, plan: &SuperStreamPlan) -> Result<(), AmqpError> {
        let n = plan.partitions.len();
        let limit = self
            .node
            .registry
            .vhost(&self.name)
            .and_then(|r| r.limits.max_queues);
        if let Some(max) = limit {
            if (self.queues.len() + n) as u64 > max {
                return Err(invalid(format!(
                    "Cannot declare super stream '{}' with {n} partition(s) because queue \
                     limit {max} in vhost '{}' is reached",
                    plan.name, self.name
                )));
            }
        }
        if self.exchange(&plan.name).is_some() {
            return Err(invalid(format!(
                "there is already an exchange named '{}' in vhost '{}'",
                plan.name, self.name
            )));
        }
        if let Some((q, _)) = plan
            .partitions
            .iter()
            .find(|(q, _)| self.queue(q).is_some())
        {
            return Err(invalid(format!(
                "there is already a queue named '{q}' in vhost '{}'",
                self.name
            )));
        }
        Ok(())
    }

    /// Removes what a failed creation made (best effort: each step logs its failure).
    async fn roll_back(&self, exchange: &str, streams: &[&str]) {
        if let Err(e) = self.delete_exchange(exchange, false).await {
            tracing::warn!("super stream '{exchange}': rollback of the exchange failed: {e}");
        }
        for s in streams {
            if let Err(e) = self.delete_queue(s, false, false, 0).await {
                tracing::warn!("super stream '{exchange}': rollback of '{s}' failed: {e}");
            }
        }
    }

    /// The super stream of that name: 404 when there is no exchange of the name marked
    /// `x-super-stream`.
    pub fn super_stream(&self, name: &str) -> Result<SuperStreamInfo, AmqpError> {
        self.exchange(name)
            .filter(|x| is_super_stream(&x.arguments))
            .map(|x| self.describe(&x.name, &x.bindings.load()))
            .ok_or_else(|| {
                AmqpError::not_found(format!("no super stream '{name}' in vhost '{}'", self.name))
            })
    }

    /// Every super stream of the vhost, by name.
    pub fn super_streams(&self) -> Vec<SuperStreamInfo> {
        let mut xs = self.exchanges();
        xs.retain(|x| is_super_stream(&x.arguments));
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        xs.iter()
            .map(|x| self.describe(&x.name, &x.bindings.load()))
            .collect()
    }

    /// A super stream's partitions: the streams its exchange is bound to, by order.
    fn describe(
        &self,
        name: &Arc<str>,
        bindings: &broker_core::routing::Bindings,
    ) -> SuperStreamInfo {
        let mut partitions: Vec<PartitionInfo> = bindings
            .all()
            .filter_map(|b| {
                let Destination::Queue(q) = &b.destination else {
                    return None;
                };
                let entry = self.queue(q).filter(|e| e.stream.is_some())?;
                Some(PartitionInfo {
                    name: q.clone(),
                    routing_key: b.routing_key.clone(),
                    order: order_of(&b.arguments),
                    arguments: entry.arguments.clone(),
                })
            })
            .collect();
        partitions.sort_by_key(|p| (p.order.is_none(), p.order));
        SuperStreamInfo {
            name: name.clone(),
            partitions,
        }
    }

    /// Deletes a super stream: its exchange, then each of its partitions (404 when it
    /// does not exist). As RabbitMQ's, a partition with consumers is deleted too.
    pub async fn delete_super_stream(&self, name: &str) -> Result<(), AmqpError> {
        let info = self.super_stream(name)?;
        self.delete_exchange(name, false).await?;
        for p in &info.partitions {
            self.delete_queue(&p.name, false, false, 0).await?;
        }
        Ok(())
    }
}

/// A partition's declare: durable, not exclusive, not auto-delete, as RabbitMQ's.
fn partition_spec(arguments: &FieldTable) -> QueueSpec {
    QueueSpec {
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: arguments.clone(),
        worker: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Result<SuperStreamPlan, AmqpError>) -> String {
        r.err().map(|e| e.text).unwrap_or_default()
    }

    #[test]
    fn numbered_partitions_are_named_and_keyed_from_zero() -> Result<(), AmqpError> {
        let p = SuperStreamPlan::numbered("inv", 3, PartitionArgs::default())?;
        let want: Vec<(String, String)> = (0..3)
            .map(|i| (format!("inv-{i}"), i.to_string()))
            .collect();
        assert_eq!(p.partitions, want);
        Ok(())
    }

    #[test]
    fn partition_counts_out_of_range_are_refused() {
        let a = PartitionArgs::default;
        assert!(text(SuperStreamPlan::numbered("s", 0, a())).contains("greater than 0"));
        assert!(text(SuperStreamPlan::numbered("s", -5, a())).contains("greater than 0"));
        assert!(text(SuperStreamPlan::numbered("s", 1001, a())).contains("not exceed 1000"));
        assert!(SuperStreamPlan::numbered("s", 1000, a()).is_ok());
    }

    #[test]
    fn keys_are_trimmed_and_must_be_distinct() -> Result<(), AmqpError> {
        let keys = |ks: &[&str]| ks.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = SuperStreamPlan::keyed("s", &keys(&[" a", "b ", ""]), PartitionArgs::default());
        let names: Vec<String> = p?.partitions.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["s-a", "s-b"]);
        let dup = SuperStreamPlan::keyed("s", &keys(&["a", "a"]), PartitionArgs::default());
        assert!(text(dup).contains("Duplicate partition names found: s-a"));
        let none = SuperStreamPlan::keyed("s", &keys(&[" ", ""]), PartitionArgs::default());
        assert!(text(none).contains("greater than 0"));
        Ok(())
    }

    #[test]
    fn bad_names_are_refused() {
        let a = PartitionArgs::default;
        assert!(text(SuperStreamPlan::numbered("", 1, a())).contains("not a correct name"));
        assert!(text(SuperStreamPlan::numbered("amq.x", 1, a())).contains("not a correct name"));
        // fits alone, but not with the partition's suffix
        let long = "s".repeat(254);
        assert!(text(SuperStreamPlan::numbered(&long, 1, a())).contains("partition name"));
    }

    #[test]
    fn partition_arguments_default_to_a_balanced_stream() {
        let t = PartitionArgs {
            max_age: Some("7D".into()),
            max_length_bytes: Some(1000),
            ..PartitionArgs::default()
        }
        .table();
        let get = |k: &str| t.inner().get(k).cloned();
        assert_eq!(
            get("x-queue-type"),
            Some(AMQPValue::LongString("stream".into()))
        );
        assert_eq!(
            get("x-queue-leader-locator"),
            Some(AMQPValue::LongString("balanced".into()))
        );
        assert_eq!(get("x-max-age"), Some(AMQPValue::LongString("7D".into())));
        assert_eq!(
            get("x-max-length-bytes"),
            Some(AMQPValue::LongLongInt(1000))
        );
        assert_eq!(get("x-stream-max-segment-size-bytes"), None);
    }
}
