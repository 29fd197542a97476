//! Series exports: one run's or one family's metrics as a query, for file downloads.

use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};

use super::Lineage;
use crate::catalog::CatalogSnapshot;
use crate::error::{Error, Result};
use crate::query::scan::MetricSelection;
use crate::query::scan::metric_selection::split_list;

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
        split_list(&[list.unwrap_or("")])
    }

    /// The filter on `metric`, built as an expression: no name reaches SQL text.
    fn metric_filter(&self) -> Result<Option<Expr>> {
        let selection = MetricSelection::parse(&self.metrics);
        selection.limit_patterns(MAX_METRIC_PATTERNS, "an export")?;
        Ok(selection.expr(col("metric")))
    }

    /// The export's query, ordered by run, metric and step, and a file stem naming it.
    ///
    /// `catalog` and `ctx` are the caller's scoped ones: runs outside them do
    /// not exist.
    pub async fn plan(
        &self,
        catalog: &CatalogSnapshot,
        ctx: &SessionContext,
    ) -> Result<(DataFrame, String)> {
        if self.run.trim().is_empty() {
            return Err(Error::invalid("give the run to export"));
        }
        let run = catalog.lookup(&self.run)?.clone();
        let filter = self.metric_filter()?;
        let id = lit(run.id as i64);
        let lineage = Lineage::of(ctx)?;
        let mut df = match (self.stitched, self.family) {
            (true, false) => ctx.read_table(lineage.stitched(run.id, None)?)?,
            (true, true) => ctx.read_table(lineage.family(run.id, None)?)?,
            (false, false) => ctx.table("metrics").await?.filter(col("run_id").eq(id))?,
            (false, true) => {
                let members: Vec<Expr> = catalog
                    .family(run.id)?
                    .iter()
                    .map(|m| lit(m.run.id as i64))
                    .collect();
                ctx.table("metrics")
                    .await?
                    .filter(col("run_id").in_list(members, false))?
            }
        };
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
