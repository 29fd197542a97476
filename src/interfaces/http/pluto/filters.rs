//! The run filter grammar of `pluto.query.list_runs` (`$and`, `$or`, `$not`,
//! and per-field `$eq`/`$ne`/`$gt`/`$gte`/`$lt`/`$lte`/`$in`/`$nin`/`$regex`),
//! evaluated against a run's JSON as the list endpoint returns it.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::Value;

use crate::error::{Error, Result};

/// How deeply filters may nest.
const MAX_DEPTH: usize = 50;

/// A parsed, validated filter.
#[derive(Debug)]
pub enum Filter {
    /// Every child matches.
    And(Vec<Filter>),
    /// Some child matches.
    Or(Vec<Filter>),
    /// The child does not match.
    Not(Box<Filter>),
    /// A field compared with an operator.
    Leaf { path: Vec<String>, op: Op },
}

/// A comparison of one field.
#[derive(Debug)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Regex(Regex),
}

/// The run JSON path a filter field reads.
fn field_path(field: &str) -> Result<Vec<String>> {
    let simple = match field {
        "state" | "status" => Some("status"),
        "heartbeat_at" | "heartbeatAt" | "updated_at" | "updatedAt" => Some("updatedAt"),
        "created_at" | "createdAt" => Some("createdAt"),
        "name" | "displayName" | "display_name" => Some("name"),
        "tags" => Some("tags"),
        _ => None,
    };
    if let Some(key) = simple {
        return Ok(vec![key.to_string()]);
    }
    for (prefix, root) in [
        ("config.", "config"),
        ("systemMetadata.", "systemMetadata"),
        ("summaryMetrics.", "summaryMetrics"),
        ("summary_metrics.", "summaryMetrics"),
    ] {
        if let Some(rest) = field.strip_prefix(prefix).filter(|r| !r.is_empty()) {
            let mut path = vec![root.to_string()];
            path.extend(rest.split('.').map(str::to_string));
            return Ok(path);
        }
    }
    Err(Error::invalid(format!("unknown filter field `{field}`")))
}

fn list(op: &str, v: &Value) -> Result<Vec<Value>> {
    v.as_array()
        .cloned()
        .ok_or_else(|| Error::invalid(format!("{op} takes a list")))
}

impl Filter {
    /// Parses and validates a filter document.
    pub fn parse(value: &Value) -> Result<Filter> {
        Self::parse_at(value, 0)
    }

    fn parse_at(value: &Value, depth: usize) -> Result<Filter> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid("filters nested too deeply"));
        }
        let obj = value
            .as_object()
            .ok_or_else(|| Error::invalid(format!("a filter must be an object, got {value}")))?;
        let mut all = Vec::new();
        for (key, v) in obj {
            let nodes = |v: &Value| -> Result<Vec<Filter>> {
                list(key, v)?
                    .iter()
                    .map(|n| Self::parse_at(n, depth + 1))
                    .collect()
            };
            all.push(match key.as_str() {
                "$and" => Filter::And(nodes(v)?),
                "$or" => Filter::Or(nodes(v)?),
                "$not" => Filter::Not(Box::new(Self::parse_at(v, depth + 1)?)),
                k if k.starts_with('$') => {
                    return Err(Error::invalid(format!("unknown boolean operator `{k}`")));
                }
                field => Self::leaves(field_path(field)?, v)?,
            });
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Filter::And(all)
        })
    }

    fn leaves(path: Vec<String>, v: &Value) -> Result<Filter> {
        let ops = match v.as_object() {
            Some(o) if o.keys().any(|k| k.starts_with('$')) => o,
            _ => {
                return Ok(Filter::Leaf {
                    path,
                    op: Op::Eq(v.clone()),
                });
            }
        };
        let mut leaves = Vec::new();
        for (op, operand) in ops {
            let op = match op.as_str() {
                "$eq" => Op::Eq(operand.clone()),
                "$ne" => Op::Ne(operand.clone()),
                "$gt" => Op::Gt(operand.clone()),
                "$gte" => Op::Gte(operand.clone()),
                "$lt" => Op::Lt(operand.clone()),
                "$lte" => Op::Lte(operand.clone()),
                "$in" => Op::In(list("$in", operand)?),
                "$nin" => Op::Nin(list("$nin", operand)?),
                "$regex" => {
                    let pattern = operand
                        .as_str()
                        .ok_or_else(|| Error::invalid("$regex takes a string"))?;
                    Op::Regex(
                        Regex::new(pattern)
                            .map_err(|e| Error::invalid(format!("bad $regex: {e}")))?,
                    )
                }
                other => return Err(Error::invalid(format!("unknown filter operator `{other}`"))),
            };
            leaves.push(Filter::Leaf {
                path: path.clone(),
                op,
            });
        }
        Ok(if leaves.len() == 1 {
            leaves.remove(0)
        } else {
            Filter::And(leaves)
        })
    }

    /// Whether `run` (the list endpoint's JSON of a run) satisfies the filter.
    pub fn matches(&self, run: &Value) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(run)),
            Filter::Or(any) => any.iter().any(|f| f.matches(run)),
            Filter::Not(f) => !f.matches(run),
            Filter::Leaf { path, op } => {
                let mut v = run;
                for key in path {
                    v = v.get(key).unwrap_or(&Value::Null);
                }
                // A list field (tags) matches when any element does, as in document stores.
                match v {
                    Value::Array(items) if !matches!(op, Op::Ne(_) | Op::Nin(_)) => {
                        items.iter().any(|item| op.test(item))
                    }
                    Value::Array(items) => items.iter().all(|item| op.test(item)),
                    other => op.test(other),
                }
            }
        }
    }
}

/// Equality that ignores case for strings (statuses arrive as `running` or `RUNNING`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Orders JSON values: numbers numerically, strings lexically (ISO times sort
/// correctly), nulls first.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

impl Op {
    fn test(&self, v: &Value) -> bool {
        let ordered = |operand: &Value| {
            !v.is_null() && std::mem::discriminant(v) == std::mem::discriminant(operand)
        };
        match self {
            Op::Eq(x) => same(v, x),
            Op::Ne(x) => !same(v, x),
            Op::Gt(x) => ordered(x) && compare(v, x) == Ordering::Greater,
            Op::Gte(x) => ordered(x) && compare(v, x) != Ordering::Less,
            Op::Lt(x) => ordered(x) && compare(v, x) == Ordering::Less,
            Op::Lte(x) => ordered(x) && compare(v, x) != Ordering::Greater,
            Op::In(xs) => xs.iter().any(|x| same(v, x)),
            Op::Nin(xs) => !xs.iter().any(|x| same(v, x)),
            Op::Regex(re) => v.as_str().is_some_and(|s| re.is_match(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run() -> Value {
        json!({"status": "COMPLETED", "name": "base-lr", "tags": ["a", "b"],
               "config": {"lr": 0.1, "opt": {"name": "adam"}}, "createdAt": "2026-01-02T00:00:00.000Z"})
    }

    fn check(filter: Value) -> bool {
        Filter::parse(&filter).unwrap().matches(&run())
    }

    #[test]
    fn grammar() {
        assert!(check(json!({"state": "completed"})));
        assert!(check(json!({"status": {"$ne": "RUNNING"}})));
        assert!(check(json!({"config.lr": {"$gte": 0.1, "$lt": 1}})));
        assert!(!check(json!({"config.lr": {"$gt": 0.1}})));
        assert!(check(json!({"config.opt.name": {"$in": ["sgd", "adam"]}})));
        assert!(check(json!({"tags": "a"})));
        assert!(check(json!({"tags": {"$nin": ["z"]}})));
        assert!(check(
            json!({"$or": [{"name": {"$regex": "^base"}}, {"tags": "z"}]})
        ));
        assert!(check(
            json!({"$not": {"created_at": {"$lt": "2025-12-31"}}})
        ));
        assert!(check(json!({"$and": []})));
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            json!({"colour": 1}),
            json!({"$xor": []}),
            json!({"name": {"$like": "x"}}),
            json!([1]),
            json!({"$and": [1]}),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Keys the grammar knows, some it does not, and arbitrary text.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "$and",
                    "$or",
                    "$not",
                    "$eq",
                    "$ne",
                    "$gt",
                    "$gte",
                    "$lt",
                    "$lte",
                    "$in",
                    "$nin",
                    "$regex",
                    "$xor",
                    "status",
                    "state",
                    "name",
                    "tags",
                    "createdAt",
                    "config.lr",
                    "config.",
                    "config.opt.name",
                    "summaryMetrics.loss",
                ])
                .prop_map(str::to_string),
                ".{0,8}",
            ]
        }

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                any::<i64>().prop_map(Value::from),
                prop::sample::select(vec![
                    "RUNNING",
                    "completed",
                    "^base",
                    "(",
                    "a{99999}",
                    "[z-a]",
                    "adam"
                ])
                .prop_map(Value::from),
                ".{0,6}".prop_map(Value::String),
            ]
        }

        /// Filter-shaped documents: objects of grammar keys, lists and scalars, nested.
        fn document() -> impl Strategy<Value = Value> {
            scalar().prop_recursive(6, 64, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((key(), inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn documents_parse_or_are_refused_and_match_without_panicking(doc in document()) {
                if let Ok(filter) = Filter::parse(&doc) {
                    let _ = filter.matches(&run());
                    let _ = filter.matches(&Value::Null);
                }
            }

            #[test]
            fn arbitrary_filter_text_never_panics(text in ".{0,64}") {
                if let Ok(doc) = crate::interfaces::http::lenient_json::parse(&text)
                    && let Ok(filter) = Filter::parse(&doc)
                {
                    let _ = filter.matches(&run());
                }
            }
        }

        #[test]
        fn deep_nesting_is_refused_not_a_stack_overflow() {
            let mut doc = json!({"status": "RUNNING"});
            for _ in 0..10_000 {
                // Not `json!`, which copies its operand recursively.
                doc = Value::Object(serde_json::Map::from_iter([("$not".to_string(), doc)]));
            }
            let err = Filter::parse(&doc).unwrap_err().to_string();
            assert!(err.contains("nested too deeply"), "{err}");
            // Dropping a tree this deep must not overflow the stack either.
            let mut doc = Some(doc);
            while let Some(Value::Object(mut map)) = doc.take() {
                doc = map.remove("$not");
            }
        }
    }
}
