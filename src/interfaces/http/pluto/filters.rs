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
}
