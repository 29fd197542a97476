//! Series exports: one run's or one family's metrics as a query, for file downloads.

use datafusion::prelude::DataFrame;

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

/// SQL text of a string literal.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

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

    fn metric_filter(&self) -> String {
        if self.metrics.is_empty() {
            return "TRUE".to_string();
        }
        let terms: Vec<String> = self
            .metrics
            .iter()
            .map(|m| {
                if m.contains('*') || m.contains('%') {
                    format!("metric LIKE {}", quoted(&m.replace('*', "%")))
                } else {
                    format!("metric = {}", quoted(m))
                }
            })
            .collect();
        format!("({})", terms.join(" OR "))
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
        let filter = self.metric_filter();
        let sql = match (self.stitched, self.family) {
            (true, false) => format!("SELECT * FROM stitched_metrics({id}) WHERE {filter}"),
            (true, true) => format!("SELECT * FROM family_metrics({id}) WHERE {filter}"),
            (false, false) => {
                format!("SELECT * FROM metrics WHERE run_id = {id} AND {filter}")
            }
            (false, true) => format!(
                "SELECT m.* FROM metrics m JOIN family_runs({id}) f ON m.run_id = f.run_id \
                 WHERE {filter}"
            ),
        };
        let sql = format!("SELECT * FROM ({sql}) ORDER BY run_id, metric, step");
        let df = engine.scoped_sql(&sql, scope).await?;
        let stem = format!(
            "{}-{}{}",
            run.display_id,
            if self.family { "family" } else { "run" },
            if self.stitched { "-stitched" } else { "" }
        );
        Ok((df, stem))
    }
}
