//! Which metrics a request selects, parsed in one place for every reader:
//! the lineage table functions, exports, reports and the SDK read API.
//!
//! A selector is a metric name or a pattern. Two spellings of patterns exist
//! on purpose: SQL table-function arguments are SQL, so only `%` makes a
//! pattern there ([`MetricFilter::sql`]); lists given on the command line or
//! in query parameters also accept the shell-style `*` ([`MetricFilter::glob`]).
//! Selectors become DataFusion expressions, never SQL text.

use datafusion::prelude::{Expr, lit};

use crate::error::{Error, Result};

/// One selector: a metric name, or a `%` LIKE pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricFilter {
    /// Exactly this metric.
    Exact(String),
    /// Metrics matching this LIKE pattern.
    Like(String),
}

impl MetricFilter {
    /// A table-function argument: a `%` LIKE pattern, else a name.
    pub fn sql(text: &str) -> Self {
        if text.contains('%') {
            Self::Like(text.to_string())
        } else {
            Self::Exact(text.to_string())
        }
    }

    /// A list entry: `*` or `%` make a pattern (`*` matches any text), else a name.
    pub fn glob(text: &str) -> Self {
        if text.contains('*') || text.contains('%') {
            Self::Like(text.replace('*', "%"))
        } else {
            Self::Exact(text.to_string())
        }
    }

    /// Whether this selector is a pattern.
    pub fn is_pattern(&self) -> bool {
        matches!(self, Self::Like(_))
    }

    /// The test of `column` against this selector.
    pub fn expr(&self, column: Expr) -> Expr {
        match self {
            Self::Exact(m) => column.eq(lit(m.clone())),
            Self::Like(p) => column.like(lit(p.clone())),
        }
    }
}

/// Several selectors, any of which may match (a comma-separated list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricSelection(Vec<MetricFilter>);

impl MetricSelection {
    /// The entries of a comma-separated list, given as one or several strings.
    pub fn parse(items: &[impl AsRef<str>]) -> Self {
        Self(
            split_list(items)
                .iter()
                .map(|s| MetricFilter::glob(s))
                .collect(),
        )
    }

    /// The selectors, in the order given.
    pub fn filters(&self) -> &[MetricFilter] {
        &self.0
    }

    /// Whether the list selects nothing in particular (all metrics, to an export).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many selectors are patterns.
    pub fn patterns(&self) -> usize {
        self.0.iter().filter(|f| f.is_pattern()).count()
    }

    /// The test of `column` against the whole list: the names as one `IN`
    /// list, each pattern its own `LIKE`; `None` for an empty list.
    pub fn expr(&self, column: Expr) -> Option<Expr> {
        let names: Vec<Expr> = self
            .0
            .iter()
            .filter_map(|f| match f {
                MetricFilter::Exact(name) => Some(lit(name.as_str())),
                MetricFilter::Like(_) => None,
            })
            .collect();
        let mut terms = Vec::new();
        if !names.is_empty() {
            terms.push(column.clone().in_list(names, false));
        }
        terms.extend(
            self.0
                .iter()
                .filter(|f| f.is_pattern())
                .map(|f| f.expr(column.clone())),
        );
        terms.into_iter().reduce(Expr::or)
    }

    /// Refuses a list with more than `max` patterns, each a `LIKE` test of every point.
    pub fn limit_patterns(&self, max: usize, what: &str) -> Result<()> {
        let patterns = self.patterns();
        if patterns > max {
            return Err(Error::invalid(format!(
                "{what} matches at most {max} metric patterns (names with `*` or `%`), got \
                 {patterns}; list the metrics by name instead"
            )));
        }
        Ok(())
    }
}

/// Splits comma-separated lists, trimming entries and dropping empty ones.
pub fn split_list(items: &[impl AsRef<str>]) -> Vec<String> {
    items
        .iter()
        .flat_map(|i| i.as_ref().split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `text` matches `pattern`, where `*` matches any text and
/// everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::col;

    #[test]
    fn sql_arguments_know_only_percent() {
        assert_eq!(
            MetricFilter::sql("val/%"),
            MetricFilter::Like("val/%".into())
        );
        assert_eq!(
            MetricFilter::sql("val/*"),
            MetricFilter::Exact("val/*".into())
        );
    }

    #[test]
    fn list_entries_know_star_and_percent() {
        let s = MetricSelection::parse(&["loss, val/*", "", "a%b ,"]);
        assert_eq!(
            s.filters(),
            [
                MetricFilter::Exact("loss".into()),
                MetricFilter::Like("val/%".into()),
                MetricFilter::Like("a%b".into()),
            ]
        );
        assert_eq!(s.patterns(), 2);
        assert!(MetricSelection::parse(&[" , "]).is_empty());
        assert_eq!(MetricSelection::parse(&[" , "]).expr(col("metric")), None);
    }

    #[test]
    fn names_share_one_in_list() {
        let s = MetricSelection::parse(&["a,b,c*"]);
        let expected = col("metric")
            .in_list(vec![lit("a"), lit("b")], false)
            .or(col("metric").like(lit("c%")));
        assert_eq!(s.expr(col("metric")), Some(expected));
    }

    #[test]
    fn pattern_limit() {
        let s = MetricSelection::parse(&["a*,b*,c"]);
        assert!(s.limit_patterns(2, "an export").is_ok());
        let err = s.limit_patterns(1, "an export").unwrap_err().to_string();
        assert!(
            err.contains("an export matches at most 1 metric patterns"),
            "{err}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("val/*", "val/loss"));
        assert!(glob_match("*loss", "train/loss"));
        assert!(glob_match("a*b*c", "aXXbYc"));
        assert!(!glob_match("a*b*c", "aXXcYb"));
        assert!(!glob_match("val/*", "train/loss"));
        assert!(glob_match("loss", "loss"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
