//! Rendering of lists: column selection (rabbitmqctl's column names mapped to the
//! API's JSON fields, nested fields with dots) and the three formats: an aligned
//! table, tab-separated values, and JSON.

use clap::ValueEnum;
use serde_json::{Map, Value};

use crate::error::CliError;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header row.
    Table,
    /// A JSON array of objects.
    Json,
    /// A header row, then one tab-separated line per row.
    Tsv,
}

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

/// One value as the text of a table or TSV cell: strings bare, lists of strings
/// comma-joined, other lists and objects as compact JSON, null as nothing.
pub fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    };
    escape_controls(&text)
}

/// Tabs, newlines and carriage returns as `\t`, `\n`, `\r`, so a cell stays on one line.
fn escape_controls(text: &str) -> String {
    if !text.contains(['\t', '\n', '\r']) {
        return text.to_string();
    }
    text.replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// Renders rows in `format` with the chosen columns; the result ends with a newline.
pub fn render(rows: &[Value], columns: &[Selected], format: Format) -> String {
    match format {
        Format::Json => render_json(rows, columns),
        Format::Tsv => render_tsv(rows, columns),
        Format::Table => render_table(rows, columns),
    }
}

fn render_json(rows: &[Value], columns: &[Selected]) -> String {
    let objects: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut obj = Map::new();
            for c in columns {
                obj.insert(c.name.clone(), lookup(row, &c.path).clone());
            }
            Value::Object(obj)
        })
        .collect();
    pretty(&Value::Array(objects))
}

/// Pretty JSON with a final newline.
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

fn render_tsv(rows: &[Value], columns: &[Selected]) -> String {
    let mut out = columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join("\t");
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = columns.iter().map(|c| cell(lookup(row, &c.path))).collect();
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    out
}

fn render_table(rows: &[Value], columns: &[Selected]) -> String {
    let header: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(lookup(row, &c.path))).collect())
        .collect();
    // A column whose present values are all numbers is right-aligned.
    let numeric: Vec<bool> = columns
        .iter()
        .map(|c| {
            let values: Vec<&Value> = rows
                .iter()
                .map(|r| lookup(r, &c.path))
                .filter(|v| !v.is_null())
                .collect();
            !values.is_empty() && values.iter().all(|v| v.is_number())
        })
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            std::iter::once(&header)
                .chain(body.iter())
                .map(|line| line[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in std::iter::once(&header).chain(body.iter()) {
        let mut text = String::new();
        for (i, value) in line.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - value.chars().count());
            if numeric[i] {
                text.push_str(&pad);
                text.push_str(value);
            } else {
                text.push_str(value);
                text.push_str(&pad);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Renders key/value pairs (a summary such as `status`): aligned `key: value` lines,
/// `key<TAB>value` lines, or one JSON object.
pub fn render_pairs(pairs: &[(&str, Value)], format: Format) -> String {
    match format {
        Format::Json => {
            let obj: Map<String, Value> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            pretty(&Value::Object(obj))
        }
        Format::Tsv => pairs
            .iter()
            .map(|(k, v)| format!("{k}\t{}\n", cell(v)))
            .collect(),
        Format::Table => {
            let width = pairs
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(0)
                + 1;
            pairs
                .iter()
                .map(|(k, v)| {
                    format!("{:<width$} {}", format!("{k}:"), cell(v))
                        .trim_end()
                        .to_string()
                        + "\n"
                })
                .collect()
        }
    }
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
        defaults: &["name", "messages", "arguments"],
    };

    fn rows() -> Vec<Value> {
        vec![
            json!({"name": "a", "messages": 5, "durable": true, "arguments": {"x-max-length": 10},
                   "message_stats": {"publish": 7}, "queue": {"name": "qa"}}),
            json!({"name": "longer-name", "messages": 120, "durable": false, "arguments": {}}),
        ]
    }

    fn names(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn aligned_table_with_header() {
        let cols = SET.select(None).unwrap();
        let out = render(&rows(), &cols, Format::Table);
        assert_eq!(
            out,
            "name         messages  arguments\n\
             a                   5  {\"x-max-length\":10}\n\
             longer-name       120  {}\n"
        );
    }

    #[test]
    fn tsv_has_header_and_tabs() {
        let cols = SET
            .select(Some(&names(&["name", "durable", "messages"])))
            .unwrap();
        let out = render(&rows(), &cols, Format::Tsv);
        assert_eq!(
            out,
            "name\tdurable\tmessages\na\ttrue\t5\nlonger-name\tfalse\t120\n"
        );
    }

    #[test]
    fn json_has_chosen_columns_with_raw_values() {
        let cols = SET.select(Some(&names(&["name", "arguments"]))).unwrap();
        let out: Value = serde_json::from_str(&render(&rows(), &cols, Format::Json)).unwrap();
        assert_eq!(
            out,
            json!([{"name": "a", "arguments": {"x-max-length": 10}}, {"name": "longer-name", "arguments": {}}])
        );
    }

    #[test]
    fn nested_columns_and_missing_values() {
        let cols = SET
            .select(Some(&names(&[
                "queue_name",
                "message_stats.publish",
                "name",
            ])))
            .unwrap();
        assert_eq!(cols[0].path, vec!["queue", "name"]);
        let out = render(&rows(), &cols, Format::Tsv);
        assert_eq!(
            out,
            "queue_name\tmessage_stats.publish\tname\nqa\t7\ta\n\t\tlonger-name\n"
        );
        let json: Value = serde_json::from_str(&render(&rows(), &cols, Format::Json)).unwrap();
        assert_eq!(json[1]["message_stats.publish"], Value::Null);
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
    fn cells_are_compact_and_one_line() {
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(
            cell(&json!(["administrator", "monitoring"])),
            "administrator,monitoring"
        );
        assert_eq!(cell(&json!([1, 2])), "[1,2]");
        assert_eq!(cell(&json!({"a": [1]})), "{\"a\":[1]}");
        assert_eq!(cell(&json!("a\tb\nc")), "a\\tb\\nc");
    }

    #[test]
    fn empty_list_prints_header_only() {
        let cols = SET.select(None).unwrap();
        assert_eq!(
            render(&[], &cols, Format::Table),
            "name  messages  arguments\n"
        );
        assert_eq!(render(&[], &cols, Format::Json), "[]\n");
    }

    #[test]
    fn pairs_render_in_each_format() {
        let pairs = [("node", json!("n1")), ("queues", json!(3))];
        assert_eq!(
            render_pairs(&pairs, Format::Table),
            "node:   n1\nqueues: 3\n"
        );
        assert_eq!(render_pairs(&pairs, Format::Tsv), "node\tn1\nqueues\t3\n");
        let v: Value = serde_json::from_str(&render_pairs(&pairs, Format::Json)).unwrap();
        assert_eq!(v, json!({"node": "n1", "queues": 3}));
    }
}
