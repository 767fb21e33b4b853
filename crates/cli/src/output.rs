//! Rendering of lists in the three formats: an aligned table, tab-separated values,
//! and JSON; the columns come from [`crate::columns`].

use clap::ValueEnum;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::columns::{lookup, Selected};

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
    let objects: Vec<Ordered<'_>> = rows
        .iter()
        .map(|row| {
            Ordered(
                columns
                    .iter()
                    .map(|c| (c.name.as_str(), lookup(row, &c.path)))
                    .collect(),
            )
        })
        .collect();
    finish(serde_json::to_string_pretty(&objects))
}

/// A JSON object whose keys keep the order given (the columns' order).
struct Ordered<'a>(Vec<(&'a str, &'a Value)>);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn finish(result: Result<String, serde_json::Error>) -> String {
    let mut text = result.unwrap_or_else(|e| format!("\"cannot serialize: {e}\""));
    text.push('\n');
    text
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
            let obj = Ordered(pairs.iter().map(|(k, v)| (*k, v)).collect());
            finish(serde_json::to_string_pretty(&obj))
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
    use crate::columns::{col, Column, ColumnSet};
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
        // Keys keep the columns' order, not alphabetical order.
        let text = render(&rows()[..1], &cols, Format::Json);
        assert_eq!(text, "[\n  {\n    \"name\": \"a\",\n    \"arguments\": {\n      \"x-max-length\": 10\n    }\n  }\n]\n");
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
