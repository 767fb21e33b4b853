//! Column selection: rabbitmqctl's column names mapped to the API's JSON fields,
//! nested fields addressed with dots, and the lookup of a column's value in a row.

use serde_json::Value;

use crate::error::CliError;

/// One known column of a resource.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The name users type (rabbitmqctl's where it has one).
    pub name: &'static str,
    /// The dotted path of the field in the API's JSON objects.
    pub path: &'static str,
}

/// Shorthand for a column whose name is its API field.
pub const fn col(name: &'static str) -> Column {
    Column { name, path: name }
}

/// The columns of one resource.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSet {
    /// What is listed, for messages ("queues").
    pub resource: &'static str,
    /// Every column that may be asked for by name.
    pub known: &'static [Column],
    /// The columns shown without `--columns`.
    pub defaults: &'static [&'static str],
}

/// A column chosen for output: its header and the path to its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The header (and JSON key) of the column.
    pub name: String,
    /// Path segments into each row.
    pub path: Vec<String>,
}

impl ColumnSet {
    /// Resolves the requested column names (or the defaults) to paths.
    ///
    /// A name is valid if it is a known column, or a dotted path whose first segment
    /// is a known column or field (`message_stats.publish`, `queue.name`).
    pub fn select(&self, requested: Option<&[String]>) -> Result<Vec<Selected>, CliError> {
        let names: Vec<String> = match requested {
            Some(r) => r.iter().map(|s| s.trim().to_string()).collect(),
            None => self.defaults.iter().map(|s| s.to_string()).collect(),
        };
        if names.is_empty() {
            return Err(self.unknown(""));
        }
        names.into_iter().map(|name| self.resolve(name)).collect()
    }

    fn resolve(&self, name: String) -> Result<Selected, CliError> {
        if let Some(c) = self.known.iter().find(|c| c.name == name) {
            return Ok(Selected {
                path: split_path(c.path),
                name,
            });
        }
        let path = split_path(&name);
        let first = path.first().map(String::as_str).unwrap_or("");
        let known_root = self
            .known
            .iter()
            .any(|c| c.name == first || c.path.split('.').next() == Some(first));
        if path.len() > 1 && path.iter().all(|s| !s.is_empty()) && known_root {
            return Ok(Selected { name, path });
        }
        Err(self.unknown(&name))
    }

    fn unknown(&self, name: &str) -> CliError {
        let valid: Vec<&str> = self.known.iter().map(|c| c.name).collect();
        CliError::Usage(format!(
            "unknown column '{name}' for {}; valid columns: {} (and their nested fields, joined with dots)",
            self.resource,
            valid.join(", "),
        ))
    }
}

fn split_path(path: &str) -> Vec<String> {
    path.split('.').map(str::to_string).collect()
}

/// The value at `path` in `row` (`Null` when absent); numeric segments index arrays.
pub fn lookup<'a>(row: &'a Value, path: &[String]) -> &'a Value {
    let mut cur = row;
    for segment in path {
        cur = match cur {
            Value::Object(m) => m.get(segment).unwrap_or(&Value::Null),
            Value::Array(a) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .unwrap_or(&Value::Null),
            _ => &Value::Null,
        };
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KNOWN: &[Column] = &[
        col("name"),
        col("messages"),
        col("durable"),
        col("arguments"),
        col("message_stats"),
        Column {
            name: "queue_name",
            path: "queue.name",
        },
    ];
    const SET: ColumnSet = ColumnSet {
        resource: "queues",
        known: KNOWN,
        defaults: &["name", "messages"],
    };

    fn names(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_and_aliases_resolve_to_paths() {
        let cols = SET.select(None).unwrap();
        assert_eq!(
            cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["name", "messages"]
        );
        let cols = SET
            .select(Some(&names(&[
                "queue_name",
                "message_stats.publish",
                " durable ",
            ])))
            .unwrap();
        assert_eq!(
            cols[0],
            Selected {
                name: "queue_name".into(),
                path: vec!["queue".into(), "name".into()]
            }
        );
        assert_eq!(cols[1].path, vec!["message_stats", "publish"]);
        assert_eq!(cols[2].name, "durable");
    }

    #[test]
    fn unknown_column_is_a_usage_error_listing_valid_ones() {
        let err = SET.select(Some(&names(&["name", "bogus"]))).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains("unknown column 'bogus' for queues"), "{msg}");
        assert!(msg.contains("name, messages, durable, arguments"), "{msg}");
        // A dotted path must start at a known field.
        assert!(SET.select(Some(&names(&["nope.x"]))).is_err());
        assert!(SET.select(Some(&names(&["name."]))).is_err());
        assert!(SET.select(Some(&names(&[""]))).is_err());
    }

    #[test]
    fn lookup_walks_objects_and_arrays() {
        let row = json!({"a": {"b": [10, {"c": "x"}]}});
        let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(lookup(&row, &path("a.b.0")), &json!(10));
        assert_eq!(lookup(&row, &path("a.b.1.c")), &json!("x"));
        assert_eq!(lookup(&row, &path("a.zz")), &Value::Null);
        assert_eq!(lookup(&row, &path("a.b.9")), &Value::Null);
    }
}
