//! RabbitMQ's paging, sorting and filtering of the list endpoints (`/api/queues`,
//! `/api/exchanges`, `/api/connections`, `/api/channels`): the `page`, `page_size`,
//! `name`, `use_regex`, `sort`, `sort_reverse` and `columns` query parameters, with
//! RabbitMQ 3.10's page object and error texts.
//!
//! A list is filtered by name and, when it is sorted by a field the caller knows without
//! computing an item (`name`, `vhost`, or no sort at all), cut to its page before any
//! item's JSON is computed: a queue's JSON costs an actor round trip (a network round
//! trip for a queue of another node), so a page of 100 of 10,000 queues computes 100.
//! The name regex is compiled with size limits by the `regex` crate, whose matching is
//! linear in the name: a hostile pattern is refused or costs nothing.

use super::ApiError;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use serde_json::{json, Map, Value};
use std::cmp::Ordering;
use std::future::Future;

/// The largest page RabbitMQ serves.
const MAX_PAGE_SIZE: i64 = 500;
/// RabbitMQ's default page size.
const DEFAULT_PAGE_SIZE: i64 = 100;
/// The longest name filter accepted (a name is at most 255 bytes).
const MAX_FILTER_LEN: usize = 1024;
/// What a compiled name regex may take (its program and its lazy DFA's cache).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Columns kept at most (a longer list is refused, not walked).
const MAX_COLUMNS: usize = 64;

/// The listing parameters of one request.
#[derive(Debug, Default)]
pub struct ListQuery {
    /// The page asked for (1-based); without it the answer is a plain array.
    page: Option<usize>,
    page_size: usize,
    filter: Option<NameFilter>,
    /// The dotted field to sort by; `None` keeps the list's own order (by name).
    sort: Option<String>,
    sort_reverse: bool,
    columns: Option<Vec<Vec<String>>>,
}

/// The `name` parameter: a case-insensitive substring, or a regular expression.
#[derive(Debug)]
enum NameFilter {
    Substring(String),
    Regex(regex::Regex),
}

/// RabbitMQ's answer to a page parameter that is not an integer, or a bad regex.
fn invalid() -> ApiError {
    ApiError::bad_request("Pagination parameters are invalid")
}

impl ListQuery {
    /// Reads the parameters from a request's query string (400 with RabbitMQ's texts).
    pub fn parse(req: &HttpRequest) -> Result<ListQuery, ApiError> {
        let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|_| invalid())?
            .into_inner();
        let get = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let int = |k: &str| -> Result<Option<i64>, ApiError> {
            get(k)
                .map(|v| v.trim().parse::<i64>().map_err(|_| invalid()))
                .transpose()
        };
        let mut q = ListQuery {
            page_size: DEFAULT_PAGE_SIZE as usize,
            sort_reverse: get("sort_reverse") == Some("true"),
            sort: get("sort").filter(|s| !s.is_empty()).map(str::to_owned),
            ..ListQuery::default()
        };
        if let Some(page) = int("page")? {
            let size = int("page_size")?;
            let ok_size = size.unwrap_or(DEFAULT_PAGE_SIZE);
            if page < 1 || !(1..=MAX_PAGE_SIZE).contains(&ok_size) {
                let size = size.map_or("undefined".to_owned(), |s| s.to_string());
                return Err(ApiError::with_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_pagination_parameters",
                    format!("Invalid pagination parameters: page number {page}, page size {size}"),
                ));
            }
            q.page = Some(page as usize);
            q.page_size = ok_size as usize;
        }
        if let Some(name) = get("name").filter(|n| !n.is_empty()) {
            if name.len() > MAX_FILTER_LEN {
                return Err(invalid());
            }
            q.filter = Some(if get("use_regex") == Some("true") {
                let re = regex::RegexBuilder::new(name)
                    .case_insensitive(true)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|_| invalid())?;
                NameFilter::Regex(re)
            } else {
                NameFilter::Substring(name.to_lowercase())
            });
        }
        if let Some(cols) = get("columns").filter(|c| !c.is_empty()) {
            let cols: Vec<Vec<String>> = cols
                .split(',')
                .map(|c| c.trim().split('.').map(str::to_owned).collect())
                .collect();
            if cols.len() > MAX_COLUMNS {
                return Err(invalid());
            }
            q.columns = Some(cols);
        }
        Ok(q)
    }

    /// Whether `name` passes the name filter.
    pub fn matches(&self, name: &str) -> bool {
        match &self.filter {
            None => true,
            Some(NameFilter::Substring(s)) => name.to_lowercase().contains(s),
            Some(NameFilter::Regex(re)) => re.is_match(name),
        }
    }

    /// The answer for a list whose items are already JSON (cheap to compute), named by
    /// their `name` field.
    pub fn answer(&self, items: Vec<Value>) -> Result<Value, ApiError> {
        let total = items.len();
        let mut items: Vec<Value> = items
            .into_iter()
            .filter(|v| self.matches(v.get("name").and_then(Value::as_str).unwrap_or("")))
            .collect();
        if let Some(field) = &self.sort {
            sort_values(&mut items, field);
        }
        if self.sort_reverse {
            items.reverse();
        }
        self.finish(total, items.len(), |r| items.drain(r).collect())
    }

    /// The answer for a list of `T` whose JSON costs something (`json`, run with at most
    /// `concurrency` at once): filtered by `name_of`, and when sorted by name, vhost or
    /// not at all, cut to the page first so only the page's items are computed.
    /// `items` come in the list's default order.
    pub async fn answer_lazy<T, F, Fut>(
        &self,
        items: Vec<T>,
        name_of: impl Fn(&T) -> (&str, &str),
        json: F,
        concurrency: usize,
    ) -> Result<Value, ApiError>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = Value>,
    {
        let total = items.len();
        let mut items: Vec<T> = items
            .into_iter()
            .filter(|t| self.matches(name_of(t).1))
            .collect();
        let cheap = match self.sort.as_deref() {
            None => true,
            Some("name") => {
                items.sort_by(|a, b| name_of(a).1.cmp(name_of(b).1));
                true
            }
            Some("vhost") => {
                items.sort_by(|a, b| name_of(a).0.cmp(name_of(b).0));
                true
            }
            Some(_) => false,
        };
        let filtered = items.len();
        if cheap {
            if self.sort_reverse {
                items.reverse();
            }
            let range = self.range(filtered)?;
            let page: Vec<T> = items.drain(range).collect();
            let page = compute(page, &json, concurrency).await;
            return Ok(self.wrap(total, filtered, page));
        }
        let mut values = compute(items, &json, concurrency).await;
        if let Some(field) = &self.sort {
            sort_values(&mut values, field);
        }
        if self.sort_reverse {
            values.reverse();
        }
        self.finish(total, filtered, |r| values.drain(r).collect())
    }

    /// The page's range in a filtered list of `len` (the whole list without `page`), or
    /// RabbitMQ's 400 for a page past the last.
    fn range(&self, len: usize) -> Result<std::ops::Range<usize>, ApiError> {
        let Some(page) = self.page else {
            return Ok(0..len);
        };
        let start = (page - 1).saturating_mul(self.page_size);
        if page > 1 && start >= len {
            return Err(ApiError::with_error(
                StatusCode::BAD_REQUEST,
                "page_out_of_range",
                format!(
                    "Page out of range, page: {page} page size: {}, len: {len}",
                    self.page_size
                ),
            ));
        }
        Ok(start.min(len)..start.saturating_add(self.page_size).min(len))
    }

    fn finish(
        &self,
        total: usize,
        filtered: usize,
        take: impl FnOnce(std::ops::Range<usize>) -> Vec<Value>,
    ) -> Result<Value, ApiError> {
        let range = self.range(filtered)?;
        Ok(self.wrap(total, filtered, take(range)))
    }

    /// The page object (with `page`) or the plain array, each item cut to `columns`.
    fn wrap(&self, total: usize, filtered: usize, items: Vec<Value>) -> Value {
        let items: Vec<Value> = match &self.columns {
            None => items,
            Some(cols) => items.iter().map(|v| keep_columns(v, cols)).collect(),
        };
        let Some(page) = self.page else {
            return Value::Array(items);
        };
        json!({
            "filtered_count": filtered,
            "item_count": items.len(),
            "items": items,
            "page": page,
            "page_count": filtered.div_ceil(self.page_size),
            "page_size": self.page_size,
            "total_count": total,
        })
    }
}

/// Each item's JSON, at most `concurrency` computed at once, in the items' order.
async fn compute<T, F, Fut>(items: Vec<T>, json: &F, concurrency: usize) -> Vec<Value>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Value>,
{
    use futures::StreamExt;
    futures::stream::iter(items.into_iter().map(json))
        .buffered(concurrency)
        .collect()
        .await
}

/// The value at a dotted path, if there is one.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// Erlang's term order as RabbitMQ sorts by: numbers, then atoms (booleans, null, a
/// missing field), then strings; arrays and objects last.
fn rank(v: Option<&Value>) -> u8 {
    match v {
        Some(Value::Number(_)) => 0,
        None | Some(Value::Null) | Some(Value::Bool(_)) => 1,
        Some(Value::String(_)) => 2,
        Some(_) => 3,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// A stable sort by a dotted field: items that tie keep the list's order (by name).
fn sort_values(items: &mut [Value], field: &str) {
    items.sort_by(|a, b| compare(at(a, field), at(b, field)));
}

/// Keeps only the dotted `columns` of an object (missing ones are left out, as
/// RabbitMQ does).
fn keep_columns(v: &Value, columns: &[Vec<String>]) -> Value {
    let mut out = Value::Object(Map::new());
    for path in columns {
        let mut src = Some(v);
        for k in path {
            src = src.and_then(|s| s.get(k));
        }
        let Some(found) = src else { continue };
        let mut dst = &mut out;
        for (i, k) in path.iter().enumerate() {
            let Some(obj) = dst.as_object_mut() else {
                break;
            };
            if i + 1 == path.len() {
                obj.insert(k.clone(), found.clone());
                break;
            }
            dst = obj
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_nested_fields() {
        let v = json!({"name": "a", "message_stats": {"publish": 3, "ack": 1}, "x": 1});
        let cols = vec![
            vec!["name".to_owned()],
            vec!["message_stats".to_owned(), "publish".to_owned()],
            vec!["missing".to_owned()],
        ];
        assert_eq!(
            keep_columns(&v, &cols),
            json!({"name": "a", "message_stats": {"publish": 3}})
        );
    }

    #[test]
    fn sort_orders_numbers_before_strings_and_is_stable() {
        let mut items = vec![
            json!({"name": "a", "m": "x"}),
            json!({"name": "b", "m": 2}),
            json!({"name": "c"}),
            json!({"name": "d", "m": 1}),
            json!({"name": "e", "m": 2}),
        ];
        sort_values(&mut items, "m");
        let names: Vec<&str> = items.iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(names, ["d", "b", "e", "c", "a"]);
    }
}
