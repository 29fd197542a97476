//! Series exports: one run's or one family's metrics as a query, for file downloads.

use datafusion::prelude::{DataFrame, Expr, col, lit};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::scope::Projects;

/// What to export.
#[derive(Debug, Clone)]
pub struct SeriesExport {
    /// The run (id or display id); with `family`, any run of the family.
    pub run: String,
    /// Metric names or patterns (`*` and `%` match any text); empty means all.
    pub metrics: Vec<String>,
    /// Each run's stitched view (inherited points included) rather than its own points.
    pub stitched: bool,
    /// Every run of the run's family rather than the run alone.
    pub family: bool,
}

/// Most metric patterns (`*`, `%`) an export may match: each is a `LIKE` test
/// of every point. Plain names are unlimited (one `IN` list).
pub const MAX_METRIC_PATTERNS: usize = 100;

impl SeriesExport {
    /// Parses a comma-separated metric list, dropping empty entries.
    pub fn parse_metrics(list: Option<&str>) -> Vec<String> {
        list.unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The filter on `metric`, built as an expression: no name reaches SQL text.
    fn metric_filter(&self) -> Result<Option<Expr>> {
        let (patterns, names): (Vec<&String>, Vec<&String>) = self
            .metrics
            .iter()
            .partition(|m| m.contains('*') || m.contains('%'));
        if patterns.len() > MAX_METRIC_PATTERNS {
            return Err(Error::invalid(format!(
                "an export matches at most {MAX_METRIC_PATTERNS} metric patterns (names with \
                 `*` or `%`), got {}; list the metrics by name instead",
                patterns.len()
            )));
        }
        let mut terms = Vec::new();
        if !names.is_empty() {
            let names = names.iter().map(|n| lit(n.as_str())).collect();
            terms.push(col("metric").in_list(names, false));
        }
        terms.extend(
            patterns
                .iter()
                .map(|p| col("metric").like(lit(p.replace('*', "%")))),
        );
        Ok(terms.into_iter().reduce(Expr::or))
    }

    /// The export's query, ordered by run, metric and step, and a file stem naming it.
    ///
    /// Runs outside `scope` do not exist.
    pub async fn plan(&self, engine: &Engine, scope: &Projects) -> Result<(DataFrame, String)> {
        if self.run.trim().is_empty() {
            return Err(Error::invalid("give the run to export"));
        }
        let run = engine
            .scoped_catalog(scope)
            .await?
            .lookup(&self.run)?
            .clone();
        let id = run.id;
        let filter = self.metric_filter()?;
        let sql = match (self.stitched, self.family) {
            (true, false) => format!("SELECT * FROM stitched_metrics({id})"),
            (true, true) => format!("SELECT * FROM family_metrics({id})"),
            (false, false) => format!("SELECT * FROM metrics WHERE run_id = {id}"),
            (false, true) => {
                format!("SELECT m.* FROM metrics m JOIN family_runs({id}) f ON m.run_id = f.run_id")
            }
        };
        let mut df = engine.scoped_sql(&sql, scope).await?;
        if let Some(filter) = filter {
            df = df.filter(filter)?;
        }
        let ascending = |name| col(name).sort(true, false);
        let df = df.sort(vec![
            ascending("run_id"),
            ascending("metric"),
            ascending("step"),
        ])?;
        let stem = format!(
            "{}-{}{}",
            run.display_id,
            if self.family { "family" } else { "run" },
            if self.stitched { "-stitched" } else { "" }
        );
        Ok((df, stem))
    }
}
