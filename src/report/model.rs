//! What a report is: its request, goals, progress events and the computed
//! sections every format renders.

use std::sync::Arc;

use serde::Serialize;

use super::series::Point;
use super::stats::{Goal, RunStats};
use crate::catalog::RunId;
use crate::error::{Error, Result};
use crate::query::scan::metric_selection::{glob_match, split_list};

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML file with inline SVG charts.
    Html,
    /// Markdown tables.
    Md,
    /// Every number, as one JSON document.
    Json,
    /// One row per (family, metric, run).
    Csv,
}

impl std::str::FromStr for ReportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "html" => Ok(Self::Html),
            "md" | "markdown" => Ok(Self::Md),
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            other => Err(Error::invalid(format!(
                "unknown report format `{other}` (expected html, md, json or csv)"
            ))),
        }
    }
}

impl ReportFormat {
    /// HTTP media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Html => "text/html; charset=utf-8",
            Self::Md => "text/markdown; charset=utf-8",
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    /// Usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Html => "html",
            Self::Md => "md",
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }
}

/// Goals per metric: entries `name=min|max` (the name may hold `*`), and a
/// bare `min|max` as the default for every other metric (`min` when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Goals {
    default: Goal,
    per_metric: Vec<(String, Goal)>,
}

impl Default for Goals {
    fn default() -> Self {
        Self {
            default: Goal::Min,
            per_metric: Vec::new(),
        }
    }
}

impl Goals {
    /// Parses `min`, `max`, or `train/loss=min,val/acc=max` (both may mix).
    pub fn parse(text: Option<&str>) -> Result<Self> {
        let mut goals = Goals::default();
        let Some(text) = text else { return Ok(goals) };
        let mut default_seen = false;
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.rsplit_once('=') {
                Some((metric, goal)) => {
                    let metric = metric.trim();
                    if metric.is_empty() {
                        return Err(Error::invalid(format!("goal `{entry}` names no metric")));
                    }
                    let goal = goal
                        .parse()
                        .map_err(|e| Error::invalid(format!("goal of `{metric}`: {e}")))?;
                    goals.per_metric.push((metric.to_string(), goal));
                }
                None => {
                    if default_seen {
                        return Err(Error::invalid("give at most one goal without a metric"));
                    }
                    default_seen = true;
                    goals.default = entry.parse().map_err(Error::invalid)?;
                }
            }
        }
        Ok(goals)
    }

    /// The goal of `metric`: the first matching entry, else the default.
    pub fn of(&self, metric: &str) -> Goal {
        self.per_metric
            .iter()
            .find(|(pattern, _)| glob_match(pattern, metric))
            .map_or(self.default, |(_, g)| *g)
    }
}

/// What a report covers.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// Project.
    pub project: String,
    /// Runs whose families to cover (any member names its family).
    pub families: Vec<String>,
    /// Cover every family of the project.
    pub all_families: bool,
    /// Metric names or patterns (`*` matches any text).
    pub metrics: Vec<String>,
    /// Goal per metric.
    pub goals: Goals,
}

impl ReportRequest {
    /// Splits a comma-separated list, dropping empty entries.
    pub fn split_list<S: AsRef<str>>(items: &[S]) -> Vec<String> {
        split_list(items)
    }
}

/// Progress of a report being computed.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Starting: this many scans to run (each of a family and a few metrics).
    Start { scans: usize },
    /// Scanning metric spec `index` (0-based); `rows` points received so far
    /// (first sent with 0 when the scan starts).
    Scan {
        index: usize,
        spec: String,
        rows: u64,
    },
    /// `done` scans have finished, the per-run numbers of their metrics computed.
    ScanDone { done: usize },
}

/// A run's row in a family table.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Numeric id.
    pub run_id: RunId,
    /// Display id.
    pub display_id: String,
    /// The run's name.
    pub name: String,
    /// Display id of the resolved parent.
    pub parent: Option<String>,
    /// Last inherited step.
    pub fork_step: Option<u64>,
    /// Forks between the root and the run.
    pub depth: usize,
    /// Lifecycle status.
    pub status: String,
    /// The numbers.
    #[serde(flatten)]
    pub stats: RunStats,
    /// Rank by best value inside the family (1 = best; ties share a rank).
    pub rank: Option<usize>,
    /// The winning branch (one per family and metric).
    pub winner: bool,
}

/// One metric of one family: the table, and the series behind the chart.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyMetric {
    /// Metric name.
    pub metric: String,
    /// Goal used for best values and ranks.
    pub goal: Goal,
    /// Display id of the winning run, if any run has a value.
    pub winner: Option<String>,
    /// One row per run, in family order (root first, then breadth-first by id).
    pub runs: Vec<RunRow>,
    /// Each run's stitched series, for drawing (not serialized).
    #[serde(skip)]
    pub series: Vec<Arc<Vec<Point>>>,
}

/// The best run of a family for one metric, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct BestRun {
    /// Metric.
    pub metric: String,
    /// Display id of the winner.
    pub run: Option<String>,
    /// Its best value.
    pub value: Option<f64>,
    /// Step of that value.
    pub step: Option<u64>,
}

/// One family section.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyReport {
    /// Display id of the root.
    pub root: String,
    /// Numeric id of the root.
    pub root_id: RunId,
    /// The family's experiment name (the root's name).
    pub experiment: String,
    /// Anchor of the section in HTML and Markdown.
    pub anchor: String,
    /// Number of runs.
    pub size: usize,
    /// Largest depth.
    pub depth: usize,
    /// Runs still RUNNING (their numbers may move).
    pub running: Vec<String>,
    /// Best run per metric.
    pub best: Vec<BestRun>,
    /// Per-metric tables.
    pub metrics: Vec<FamilyMetric>,
}

/// A metric of the report with its goal.
#[derive(Debug, Clone, Serialize)]
pub struct MetricGoal {
    /// Metric name.
    pub name: String,
    /// Goal.
    pub goal: Goal,
}

/// A whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Project.
    pub project: String,
    /// Metrics covered, with goals.
    pub metrics: Vec<MetricGoal>,
    /// Family sections, by root id.
    pub families: Vec<FamilyReport>,
}

/// A report's rows are its family sections.
impl crate::query::admission::gate::Delivered for Report {
    fn delivered(&self) -> (u64, u64) {
        (self.families.len() as u64, 0)
    }
}
