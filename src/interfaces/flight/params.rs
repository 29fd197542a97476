//! Prepared-statement parameters: placeholders are bound in the SQL syntax tree,
//! before planning, so `$1` / `?` work everywhere an expression may stand —
//! including the run argument of a lineage table function, which DataFusion
//! resolves while planning and so never sees a late-bound placeholder.

use std::ops::ControlFlow;

use arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A prepared statement, carried whole in its handle so that any server process
/// (or a restarted one) can execute it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Handle {
    /// The statement text as the client sent it.
    pub sql: String,
    /// Bound parameter values as SQL literals, in placeholder order; `None` until bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
}

impl Handle {
    /// The opaque bytes handed to the client.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a handle is plain strings")
    }

    /// Reads a handle sent back by a client.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("unknown prepared statement handle: {e}")))
    }

    /// The SQL to plan: the text with its placeholders replaced by the bound values.
    pub fn bound_sql(&self) -> Result<String> {
        match &self.params {
            None => Ok(self.sql.clone()),
            Some(values) => bind(&self.sql, values),
        }
    }
}

/// How many placeholders `sql` has (0 when it does not parse as one statement;
/// the planner will then explain what is wrong with it).
pub fn placeholder_count(sql: &str) -> usize {
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else {
        return 0;
    };
    let mut names = Vec::new();
    let _ = visit_expressions_mut(&mut statements, |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(name) = &v.value
        {
            names.push(name.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    let positional = names.iter().filter(|n| n.as_str() == "?").count();
    let numbered = names
        .iter()
        .filter_map(|n| n.strip_prefix('$')?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    positional.max(numbered)
}

/// Replaces `$n` (1-based) or `?` (in order of appearance) placeholders of `sql`
/// with the SQL literals in `values`.
pub fn bind(sql: &str, values: &[String]) -> Result<String> {
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| Error::invalid(format!("cannot bind parameters: {e}")))?;
    if statements.len() != 1 {
        return Err(Error::invalid(format!(
            "a prepared statement holds exactly one statement, not {}",
            statements.len()
        )));
    }
    let literals = values
        .iter()
        .map(|v| {
            Parser::new(&GenericDialect {})
                .try_with_sql(v)
                .and_then(|mut p| p.parse_expr())
                .map_err(|e| Error::invalid(format!("bad parameter literal `{v}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut next_positional = 0usize;
    let flow = visit_expressions_mut(&mut statements, |expr| {
        let Expr::Value(v) = expr else {
            return ControlFlow::Continue(());
        };
        let Value::Placeholder(name) = &v.value else {
            return ControlFlow::Continue(());
        };
        let index = if name == "?" {
            next_positional += 1;
            next_positional - 1
        } else {
            match name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n >= 1 => n - 1,
                _ => {
                    return ControlFlow::Break(Error::invalid(format!(
                        "unsupported placeholder `{name}` (use $1, $2, … or ?)"
                    )));
                }
            }
        };
        match literals.get(index) {
            Some(literal) => {
                *expr = literal.clone();
                ControlFlow::Continue(())
            }
            None => ControlFlow::Break(Error::invalid(format!(
                "placeholder `{name}` has no bound value ({} bound)",
                literals.len()
            ))),
        }
    });
    if let ControlFlow::Break(e) = flow {
        return Err(e);
    }
    Ok(statements[0].to_string())
}

/// The SQL literals of the single row of a parameter batch.
pub fn literals_of(batch: &RecordBatch) -> Result<Vec<String>> {
    if batch.num_rows() != 1 {
        return Err(Error::invalid(format!(
            "a query binds exactly one row of parameters, not {}",
            batch.num_rows()
        )));
    }
    batch
        .columns()
        .iter()
        .map(|column| {
            let value = ScalarValue::try_from_array(column.as_ref(), 0)?;
            literal(&value)
        })
        .collect()
}

/// `value` as SQL text that plans back to the same value.
fn literal(value: &ScalarValue) -> Result<String> {
    if value.is_null() {
        return Ok("NULL".to_string());
    }
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    Ok(match value {
        ScalarValue::Boolean(Some(b)) => b.to_string().to_uppercase(),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_) => value.to_string(),
        ScalarValue::Float16(_) | ScalarValue::Float32(_) | ScalarValue::Float64(_) => {
            let ScalarValue::Float64(Some(f)) =
                value.cast_to(&arrow::datatypes::DataType::Float64)?
            else {
                unreachable!("a non-null float casts to a non-null double");
            };
            if f.is_finite() {
                format!("CAST({f:?} AS DOUBLE)")
            } else {
                format!("CAST('{f}' AS DOUBLE)")
            }
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => quoted(s),
        ScalarValue::Date32(_) | ScalarValue::Date64(_) => {
            format!("DATE {}", quoted(&value.to_string()))
        }
        ScalarValue::TimestampSecond(..)
        | ScalarValue::TimestampMillisecond(..)
        | ScalarValue::TimestampMicrosecond(..)
        | ScalarValue::TimestampNanosecond(..) => {
            format!("TIMESTAMP {}", quoted(&value.to_string()))
        }
        other => {
            return Err(Error::invalid(format!(
                "unsupported parameter type {}",
                other.data_type()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_numbered_and_positional_placeholders_everywhere() {
        let sql = "SELECT * FROM stitched_metrics($1, 'loss') WHERE step > $2 AND run_id = $1";
        let bound = bind(sql, &["'VS-6'".into(), "10".into()]).unwrap();
        assert_eq!(
            bound,
            "SELECT * FROM stitched_metrics('VS-6', 'loss') WHERE step > 10 AND run_id = 'VS-6'"
        );
        let bound = bind("SELECT ? + ?", &["1".into(), "2".into()]).unwrap();
        assert_eq!(bound, "SELECT 1 + 2");
        assert_eq!(placeholder_count(sql), 2);
        assert_eq!(placeholder_count("SELECT ?, ?, ?"), 3);
    }

    #[test]
    fn placeholders_inside_strings_are_text() {
        let bound = bind("SELECT '$1', $1", &["'x'".into()]).unwrap();
        assert_eq!(bound, "SELECT '$1', 'x'");
    }

    #[test]
    fn missing_values_and_quotes_are_handled() {
        let err = bind("SELECT $2", &["1".into()]).unwrap_err();
        assert!(err.to_string().contains("no bound value"), "{err}");
        let batch = RecordBatch::try_from_iter([(
            "p",
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["it's"])) as _,
        )])
        .unwrap();
        let values = literals_of(&batch).unwrap();
        assert_eq!(bind("SELECT $1", &values).unwrap(), "SELECT 'it''s'");
    }

    #[test]
    fn handles_round_trip() {
        let h = Handle {
            sql: "SELECT $1".into(),
            params: Some(vec!["1".into()]),
        };
        assert_eq!(Handle::decode(&h.encode()).unwrap(), h);
        assert!(Handle::decode(b"garbage").is_err());
    }
}
