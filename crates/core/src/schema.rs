//! JSON Schema validation of message bodies (issue 18's schema registry): which content
//! types are checked, the compiled schema a publish is checked against, and the
//! exchange arguments and policy keys that attach a schema to an exchange.
//!
//! A schema is compiled once (when it is stored, or when a node materializes it) with the
//! `jsonschema` crate, built without its network and file resolvers: a `$ref` resolves
//! within the document (and the drafts' meta-schemas, which the crate bundles); any other
//! `$ref` is refused at compile time, so a publish never waits on anything outside the
//! broker. A body is parsed with serde_json, whose nesting limit (128) keeps a
//! pathological body from exhausting the stack, and checked with the compiled validator.

use crate::args::{str_value, type_name};
use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value};

/// Largest schema document the registry takes (its JSON text, in bytes).
pub const MAX_SCHEMA_BYTES: usize = 1024 * 1024;
/// Longest validation error carried in the `x-schema-error` header (bytes).
pub const MAX_ERROR_BYTES: usize = 1024;
/// Longest schema name (as an exchange name, a short string).
pub const MAX_NAME_BYTES: usize = 255;

/// Exchange argument naming the schema (a registry name).
pub const ARG_SCHEMA: &str = "x-schema";
/// Exchange argument naming the exchange that invalid messages are routed to.
pub const ARG_INVALID_EXCHANGE: &str = "x-schema-invalid-exchange";
/// Exchange argument: refuse bodies whose content type is not JSON.
pub const ARG_REQUIRE_JSON: &str = "x-schema-require-json";

/// Whether a `content_type` property names JSON: `application/json` or
/// `application/<anything>+json`, in any case, with or without parameters
/// (`; charset=utf-8`). Other types, and no type at all, are not checked.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some(sub) = essence.strip_prefix("application/") else {
        return false;
    };
    sub == "json" || (sub.len() > 5 && sub.ends_with("+json") && !sub.contains('/'))
}

/// Cuts `s` to at most `max` bytes at a character boundary, marking the cut with `…`.
pub fn bounded(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

/// Refuses every `$ref` outside the document: the crate is built without resolvers,
/// and this says so in the compile error.
struct NoRemoteRefs;

impl jsonschema::Retrieve for NoRemoteRefs {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "remote $ref '{uri}' is not resolved: only references within the schema are allowed"
        )
        .into())
    }
}

/// A schema compiled once, checked against message bodies on the publishing
/// connection's task (it is `Send + Sync` and shared by `Arc`).
pub struct CompiledSchema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledSchema")
    }
}

impl CompiledSchema {
    /// Compiles a schema document; `Err` is the compiler's message (an unknown draft, a
    /// bad keyword value, a remote `$ref`).
    pub fn compile(schema: &Value) -> Result<CompiledSchema, String> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err("a schema must be a JSON object or a boolean".into());
        }
        let validator = jsonschema::options()
            .with_retriever(NoRemoteRefs)
            .build(schema)
            .map_err(|e| bounded(e.to_string(), MAX_ERROR_BYTES))?;
        Ok(CompiledSchema { validator })
    }

    /// Checks a body: it must be JSON and match the schema. `Err` is the first problem
    /// (a parse error, or the first validation error with the path where it is), at most
    /// [`MAX_ERROR_BYTES`] long.
    pub fn check_body(&self, body: &[u8]) -> Result<(), String> {
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| bounded(format!("body is not valid JSON: {e}"), MAX_ERROR_BYTES))?;
        self.validator.validate(&doc).map_err(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            bounded(format!("{at}: {e}"), MAX_ERROR_BYTES)
        })
    }
}

/// How an exchange's messages are checked, from its arguments and its policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaSettings {
    /// The registry name of the schema (`None`: not checked).
    pub name: Option<String>,
    /// Where messages that fail go (`None`: refused).
    pub invalid_exchange: Option<String>,
    /// Whether a body whose content type is not JSON fails too.
    pub require_json: bool,
}

impl SchemaSettings {
    /// The settings of an exchange: each declared argument wins over its policy key
    /// (`schema`, `schema-invalid-exchange`, `schema-require-json`), as the declared
    /// `alternate-exchange` wins over the policy's in RabbitMQ.
    pub fn resolve(declared: &FieldTable, effective: &Map<String, Value>) -> SchemaSettings {
        let arg = |k: &str| declared.inner().get(k);
        let key = |k: &str| effective.get(k);
        SchemaSettings {
            name: arg(ARG_SCHEMA)
                .and_then(str_value)
                .or_else(|| key("schema").and_then(Value::as_str).map(str::to_owned)),
            invalid_exchange: arg(ARG_INVALID_EXCHANGE).and_then(str_value).or_else(|| {
                key("schema-invalid-exchange")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
            require_json: match arg(ARG_REQUIRE_JSON) {
                Some(AMQPValue::Boolean(b)) => *b,
                _ => key("schema-require-json")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        }
    }
}

/// Checks the schema arguments of an exchange.declare: `x-schema` and
/// `x-schema-invalid-exchange` are strings, `x-schema-require-json` a boolean (406 with
/// the wording of the other argument checks). Whether the schema exists is the
/// server's check (it has the registry).
pub fn check_args(args: &FieldTable, exchange: &str, vhost: &str) -> Result<(), AmqpError> {
    let bad = |k: &str, v: &AMQPValue| {
        AmqpError::precondition_failed(format!(
            "invalid type '{}' for arg '{k}' in exchange '{exchange}' in vhost '{vhost}'",
            type_name(v)
        ))
    };
    for k in [ARG_SCHEMA, ARG_INVALID_EXCHANGE] {
        if let Some(v) = args.inner().get(k) {
            match str_value(v) {
                None => return Err(bad(k, v)),
                Some(s) if s.is_empty() || s.len() > MAX_NAME_BYTES => {
                    return Err(AmqpError::precondition_failed(format!(
                        "invalid value for arg '{k}' in exchange '{exchange}' in vhost \
                         '{vhost}': a name of 1 to {MAX_NAME_BYTES} bytes is required"
                    )))
                }
                Some(_) => {}
            }
        }
    }
    match args.inner().get(ARG_REQUIRE_JSON) {
        Some(AMQPValue::Boolean(_)) | None => Ok(()),
        Some(v) => Err(bad(ARG_REQUIRE_JSON, v)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
