//! The schema registry: named JSON Schemas per vhost (`/api/schemas`), kept in memory
//! compiled, committed through the metadata group as JSON records under
//! `schema\0vhost\0name` like policies (every node's materializer applies them here,
//! [`Schemas::apply_record`], and then refreshes the vhost's exchanges), removed with
//! their vhost.
//!
//! An exchange attaches one by its `x-schema` argument or a policy's `schema` key; the
//! vhost resolves that to an [`Attached`] kept on the exchange entry
//! (`ExchangeEntry::schema`), which the publish path checks (`schema_check.rs`).

use crate::broker::cluster::{commit_records, ClusterNode, RecordWrite};
use broker_core::schema::MAX_ERROR_BYTES;
use broker_core::schema::{bounded, is_json_content_type, CompiledSchema, SchemaSettings};
use broker_core::store::{DefinitionStore, StoreError};
use broker_wire::protocol::basic::AMQPProperties;
use broker_wire::types::{AMQPValue, LongString, ShortString};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

const PREFIX: &str = "schema\0";

/// One stored schema: its document, description and the compiled validator.
pub struct StoredSchema {
    /// Its vhost.
    pub vhost: String,
    /// Its name in the vhost.
    pub name: String,
    /// The operator's description.
    pub description: String,
    /// The schema document as given.
    pub schema: Value,
    /// Compiled once, shared by every exchange that uses it.
    pub compiled: Arc<CompiledSchema>,
}

impl StoredSchema {
    /// Compiles a schema document (`Err`: the compiler's message).
    pub fn new(
        vhost: &str,
        name: &str,
        schema: Value,
        description: String,
    ) -> Result<StoredSchema, String> {
        let compiled = Arc::new(CompiledSchema::compile(&schema)?);
        Ok(StoredSchema {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
            description,
            schema,
            compiled,
        })
    }

    /// As the API and definitions show it.
    pub fn to_json(&self) -> Value {
        json!({"vhost": self.vhost, "name": self.name, "description": self.description,
               "schema": self.schema})
    }

    fn record(&self) -> Vec<u8> {
        json!({"schema": self.schema, "description": self.description})
            .to_string()
            .into_bytes()
    }
}

/// What an exchange checks its publishes with: its settings and, when the named schema
/// exists, the compiled schema. An exchange without a schema has none of this (`None`
/// on its entry: one branch per publish).
#[derive(Debug)]
pub struct Attached {
    /// The schema's name (shown in the API and put in `x-schema-name`).
    pub name: String,
    /// The compiled schema; `None` while the name is missing from the registry (the
    /// exchange then routes without checking, and the API says `schema_status: missing`).
    pub compiled: Option<Arc<CompiledSchema>>,
    /// Where messages that fail go (`None`: refused).
    pub invalid_exchange: Option<String>,
    /// Whether a body whose content type is not JSON fails.
    pub require_json: bool,
    /// The exchange's count of messages that failed (kept across re-attachments).
    pub invalid: Arc<AtomicU64>,
}

/// The schemas of all vhosts, by (vhost, name).
pub struct Schemas {
    table: RwLock<BTreeMap<(String, String), Arc<StoredSchema>>>,
    store: Option<Arc<dyn DefinitionStore>>,
    cluster: Option<Arc<ClusterNode>>,
    /// Held from a check (is the schema in use? does it exist?) to the commit, so a
    /// delete and a declare or policy that uses the schema cannot pass each other.
    pub changing: tokio::sync::Mutex<()>,
}

fn key(vhost: &str, name: &str) -> String {
    format!("{PREFIX}{vhost}\0{name}")
}

impl Schemas {
    /// Loads the stored schemas; a damaged record is logged and skipped.
    pub fn load(
        store: Option<Arc<dyn DefinitionStore>>,
        cluster: Option<Arc<ClusterNode>>,
    ) -> Result<Schemas, String> {
        let s = Schemas {
            table: Default::default(),
            store,
            cluster,
            changing: Default::default(),
        };
        let records = match &s.store {
            Some(st) => st
                .definitions()
                .map_err(|e| format!("cannot read schemas: {e}"))?,
            None => Vec::new(),
        };
        s.reload(&records);
        Ok(s)
    }

    /// Replaces every schema with those among `records`.
    pub fn reload(&self, records: &[(Vec<u8>, Vec<u8>)]) {
        self.write().clear();
        for (k, v) in records {
            self.apply_record(&String::from_utf8_lossy(k), Some(v));
        }
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, String), Arc<StoredSchema>>> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String), Arc<StoredSchema>>> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one committed record (`None`: removed); returns the vhost whose schemas
    /// changed (`None` for a key of another table). A record is compiled here, once
    /// per node.
    pub fn apply_record(&self, key: &str, value: Option<&[u8]>) -> Option<String> {
        let rest = key.strip_prefix(PREFIX)?;
        let (vhost, name) = rest.split_once('\0').unwrap_or((rest, ""));
        let k = (vhost.to_owned(), name.to_owned());
        match value {
            None => drop(self.write().remove(&k)),
            Some(v) => {
                let parsed = serde_json::from_slice::<Value>(v)
                    .map_err(|e| e.to_string())
                    .and_then(|mut body| {
                        let schema = body.get_mut("schema").map(Value::take);
                        let description = body
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        StoredSchema::new(vhost, name, schema.unwrap_or(Value::Null), description)
                    });
                match parsed {
                    Ok(s) => drop(self.write().insert(k, Arc::new(s))),
                    Err(e) => tracing::error!(vhost, name, "damaged schema record skipped: {e}"),
                }
            }
        }
        Some(vhost.to_owned())
    }

    async fn commit(&self, writes: Vec<RecordWrite>) -> Result<(), StoreError> {
        commit_records(self.cluster.as_ref(), writes, |k, v| {
            self.apply_record(k, v);
        })
        .await
    }

    /// Stores a compiled schema (committed through the metadata group). Returns whether
    /// it is new.
    pub async fn put(&self, s: StoredSchema) -> Result<bool, StoreError> {
        let new = self.get(&s.vhost, &s.name).is_none();
        self.commit(vec![(key(&s.vhost, &s.name), Some(s.record()))])
            .await?;
        Ok(new)
    }

    /// Removes a schema. Returns whether there was one.
    pub async fn delete(&self, vhost: &str, name: &str) -> Result<bool, StoreError> {
        if self.get(vhost, name).is_none() {
            return Ok(false);
        }
        self.commit(vec![(key(vhost, name), None)]).await?;
        Ok(true)
    }

    /// Removes every schema of a deleted vhost (one transaction).
    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), StoreError> {
        let writes: Vec<RecordWrite> = self
            .list(Some(vhost))
            .iter()
            .map(|s| (key(vhost, &s.name), None))
            .collect();
        if writes.is_empty() {
            return Ok(());
        }
        self.commit(writes).await
    }

    /// One schema.
    pub fn get(&self, vhost: &str, name: &str) -> Option<Arc<StoredSchema>> {
        self.read()
            .get(&(vhost.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The schemas of one vhost or of all, by vhost and name.
    pub fn list(&self, vhost: Option<&str>) -> Vec<Arc<StoredSchema>> {
        self.read()
            .values()
            .filter(|s| vhost.is_none_or(|v| s.vhost == v))
            .cloned()
            .collect()
    }

    /// Refuses (406) an exchange.declare whose `x-schema` names no schema of the vhost.
    pub fn check_declared(
        &self,
        args: &broker_wire::types::FieldTable,
        exchange: &str,
        vhost: &str,
    ) -> Result<(), broker_core::AmqpError> {
        let Some(name) = args
            .inner()
            .get(broker_core::schema::ARG_SCHEMA)
            .and_then(broker_core::args::str_value)
        else {
            return Ok(());
        };
        if self.get(vhost, &name).is_some() {
            return Ok(());
        }
        Err(broker_core::AmqpError::precondition_failed(format!(
            "unknown schema '{name}' for arg 'x-schema' in exchange '{exchange}' in vhost \
             '{vhost}': add it with PUT /api/schemas/{{vhost}}/{{name}} first"
        )))
    }

    /// What an exchange with these settings checks with (`None`: no schema named).
    pub fn attach(
        &self,
        vhost: &str,
        settings: SchemaSettings,
        counter: &Arc<AtomicU64>,
    ) -> Option<Arc<Attached>> {
        let name = settings.name?;
        let compiled = self.get(vhost, &name).map(|s| s.compiled.clone());
        Some(Arc::new(Attached {
            invalid: counter.clone(),
            name,
            compiled,
            invalid_exchange: settings.invalid_exchange,
            require_json: settings.require_json,
        }))
    }
}

/// Header naming the first validation error of a message sent to an invalid exchange.
pub const ERROR_HEADER: &str = "x-schema-error";
/// Header naming the schema a message sent to an invalid exchange failed.
pub const NAME_HEADER: &str = "x-schema-name";

impl Attached {
    /// Checks a publish: a body whose content type is JSON must parse and match the
    /// schema; another content type (or none) passes unless `require_json`. `Err` is the
    /// first problem (bounded, [`broker_core::schema::MAX_ERROR_BYTES`]); it is counted.
    /// Runs on the publisher's task and takes no lock.
    pub fn check(&self, props: &AMQPProperties, body: &[u8]) -> Result<(), String> {
        let Some(compiled) = &self.compiled else {
            return Ok(());
        };
        let ct = props.content_type().as_ref().map(|c| c.as_str());
        let outcome = match ct {
            Some(ct) if is_json_content_type(ct) => compiled.check_body(body),
            Some(ct) if self.require_json => Err(bounded(
                format!("content type '{ct}' is not JSON (the exchange requires JSON)"),
                MAX_ERROR_BYTES,
            )),
            None if self.require_json => {
                Err("no content type (the exchange requires JSON)".to_owned())
            }
            _ => Ok(()),
        };
        if outcome.is_err() {
            self.invalid.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Adds `x-schema-error` and `x-schema-name` to a message bound for the invalid
    /// exchange.
    pub fn mark(&self, props: AMQPProperties, error: &str) -> AMQPProperties {
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(ERROR_HEADER),
            AMQPValue::LongString(LongString::from(error)),
        );
        headers.insert(
            ShortString::from(NAME_HEADER),
            AMQPValue::LongString(LongString::from(self.name.as_str())),
        );
        props.with_headers(headers)
    }

    /// The reply text of a basic.return or a refused HTTP publish (a short string:
    /// bounded to 255 bytes).
    pub fn refusal(&self, exchange: &str, vhost: &str, error: &str) -> String {
        bounded(
            format!(
                "NO_ROUTE - message refused by schema '{}' of exchange '{exchange}' in vhost \
                 '{vhost}': {error}",
                self.name
            ),
            255,
        )
    }
}
