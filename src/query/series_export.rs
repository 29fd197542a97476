//! Series exports: one run's or one family's metrics as a query, for file downloads.

use datafusion::logical_expr::JoinType;
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};

use super::lineage_functions;
use super::metric_selection::{MetricSelection, split_list};
use crate::catalog::CatalogSnapshot;
use crate::error::{Error, Result};

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
        let mut df = match (self.stitched, self.family) {
            (true, false) => lineage_functions::call(ctx, "stitched_metrics", vec![id])?,
            (true, true) => lineage_functions::call(ctx, "family_metrics", vec![id])?,
            (false, false) => ctx.table("metrics").await?.filter(col("run_id").eq(id))?,
            (false, true) => {
                let members = lineage_functions::call(ctx, "family_runs", vec![id])?
                    .select(vec![col("run_id").alias("member")])?;
                let points = ctx.table("metrics").await?;
                let columns: Vec<Expr> = points
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                points
                    .join(members, JoinType::Inner, &["run_id"], &["member"], None)?
                    .select(columns)?
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
