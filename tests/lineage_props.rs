//! Random lineage trees against a naive in-memory oracle.
//!
//! The oracle knows nothing about segments: a run's view is its parent's view
//! cut at the fork step plus its own points after it, computed recursively.

mod common;

use std::collections::BTreeMap;

use std::sync::Arc;

use common::render;
use forkline::catalog::{ForkRequest, NewRun};
use forkline::cluster::{remote::Remote, standalone};
use forkline::ingest::MetricPoint;
use forkline::query::admission::runner::{self, PlanRunner};
use forkline::{Engine, Error};
use proptest::prelude::*;

/// Where the views are computed: here, or on a cluster started for the case.
#[derive(Debug, Clone, Copy)]
enum On {
    ThisProcess,
    Cluster,
}

/// `sql`'s rows, planned by `engine` and run by `runner`.
async fn rows(
    engine: &Engine,
    runner: &dyn PlanRunner,
    sql: &str,
) -> forkline::Result<Vec<Vec<String>>> {
    let df = engine.sql(sql).await?;
    Ok(render(&runner::collect(runner.execute(df).await?).await?))
}

/// (metric, step) → (owner index, value)
type View = BTreeMap<(String, u64), (usize, f64)>;

#[derive(Debug, Clone)]
enum Op {
    /// A new root logging these points.
    Root(Vec<(u8, u64)>),
    /// Fork run `target % n` at `frac` of its stitched range (or past it when > 1), then log points.
    Fork {
        target: usize,
        frac: f64,
        points: Vec<(u8, u64)>,
    },
}

fn point_list() -> impl Strategy<Value = Vec<(u8, u64)>> {
    prop::collection::vec((0u8..4, 0u64..120), 0..40)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => point_list().prop_map(Op::Root),
        5 => (any::<usize>(), 0.0f64..1.15, point_list())
            .prop_map(|(target, frac, points)| Op::Fork { target, frac, points }),
    ]
}

struct Oracle {
    parent: Vec<Option<(usize, u64)>>,
    own: Vec<BTreeMap<(String, u64), f64>>,
}

impl Oracle {
    fn view(&self, run: usize) -> View {
        let mut view = match self.parent[run] {
            None => View::new(),
            // System metrics are never inherited.
            Some((p, fork)) => self
                .view(p)
                .into_iter()
                .filter(|((m, s), _)| *s <= fork && !m.starts_with("sys/"))
                .collect(),
        };
        let cut = self.parent[run].map(|(_, f)| f);
        for ((m, s), v) in &self.own[run] {
            if cut.is_none_or(|f| *s > f) {
                view.insert((m.clone(), *s), (run, *v));
            }
        }
        view
    }

    fn resolve(&self, run: usize, step: u64) -> usize {
        match self.parent[run] {
            Some((p, fork)) if step <= fork => self.resolve(p, step),
            _ => run,
        }
    }

    fn root(&self, run: usize) -> usize {
        self.parent[run].map_or(run, |(p, _)| self.root(p))
    }
}

fn metric_name(m: u8) -> String {
    ["loss", "acc", "val/loss", "sys/gpu"][m as usize % 4].to_string()
}

fn to_points(run: usize, raw: &[(u8, u64)]) -> (Vec<MetricPoint>, BTreeMap<(String, u64), f64>) {
    let mut own = BTreeMap::new();
    for (i, (m, s)) in raw.iter().enumerate() {
        own.insert((metric_name(*m), *s), (run * 1000 + i) as f64 + 0.5);
    }
    let points = own
        .iter()
        .map(|((m, s), v)| MetricPoint::new(m.clone(), *s, *v))
        .collect();
    (points, own)
}

/// A random `WHERE` clause over a lineage view: each part is pushed into
/// the view's scan (or, `mixed`, left to DataFusion).
#[derive(Debug, Clone)]
struct Filter {
    /// (form, a, b): `BETWEEN a AND b`, `>= a AND < b`, `= a`, `> a`, `IN (a, b)`.
    steps: Option<(u8, u64, u64)>,
    /// (form, metrics): `=`, `IN`, a `LIKE` pattern chosen by the first metric.
    metric: Option<(u8, Vec<u8>)>,
    /// `run_id IN` these runs (indices, modulo the run count).
    viewers: Option<Vec<usize>>,
    /// `source_run_id IN` these runs.
    sources: Option<Vec<usize>>,
    inherited: Option<bool>,
    /// `(step < a OR NOT inherited)`: a filter over both kinds of column.
    mixed: Option<u64>,
}

const PATTERNS: [&str; 4] = ["%loss", "val/%", "sys/%", "a%"];

fn like(pattern: &str, metric: &str) -> bool {
    match pattern.strip_prefix('%') {
        Some(suffix) => metric.ends_with(suffix),
        None => metric.starts_with(pattern.trim_end_matches('%')),
    }
}

fn filter() -> impl Strategy<Value = Filter> {
    let runs = || prop::collection::vec(any::<usize>(), 1..3);
    (
        prop::option::of((0u8..5, 0u64..130, 0u64..130)),
        prop::option::of((0u8..3, prop::collection::vec(0u8..4, 1..3))),
        prop::option::of(runs()),
        prop::option::weighted(0.25, runs()),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.2, 0u64..130),
    )
        .prop_map(
            |(steps, metric, viewers, sources, inherited, mixed)| Filter {
                steps,
                metric,
                viewers,
                sources,
                inherited,
                mixed,
            },
        )
}

impl Filter {
    fn sql(&self, ids: &[u64]) -> String {
        let list = |runs: &[usize]| {
            let ids: Vec<String> = runs
                .iter()
                .map(|r| ids[r % ids.len()].to_string())
                .collect();
            ids.join(", ")
        };
        let mut parts = vec!["TRUE".to_string()];
        if let Some((form, a, b)) = self.steps {
            parts.push(match form {
                0 => format!("step BETWEEN {a} AND {b}"),
                1 => format!("step >= {a} AND step < {b}"),
                2 => format!("step = {a}"),
                3 => format!("step > {a}"),
                _ => format!("step IN ({a}, {b})"),
            });
        }
        if let Some((form, metrics)) = &self.metric {
            let names: Vec<String> = metrics
                .iter()
                .map(|m| format!("'{}'", metric_name(*m)))
                .collect();
            parts.push(match form {
                0 => format!("metric = {}", names[0]),
                1 => format!("metric IN ({})", names.join(", ")),
                _ => format!("metric LIKE '{}'", PATTERNS[metrics[0] as usize % 4]),
            });
        }
        if let Some(viewers) = &self.viewers {
            parts.push(format!("run_id IN ({})", list(viewers)));
        }
        if let Some(sources) = &self.sources {
            parts.push(format!("source_run_id IN ({})", list(sources)));
        }
        match self.inherited {
            Some(true) => parts.push("inherited".into()),
            Some(false) => parts.push("NOT inherited".into()),
            None => {}
        }
        if let Some(a) = self.mixed {
            parts.push(format!("(step < {a} OR NOT inherited)"));
        }
        parts.join(" AND ")
    }

    fn holds(&self, runs: usize, viewer: usize, owner: usize, metric: &str, step: u64) -> bool {
        let among = |list: &[usize], run: usize| list.iter().any(|r| r % runs == run);
        let inherited = owner != viewer;
        self.steps.is_none_or(|(form, a, b)| match form {
            0 => a <= step && step <= b,
            1 => a <= step && step < b,
            2 => step == a,
            3 => step > a,
            _ => step == a || step == b,
        }) && self
            .metric
            .as_ref()
            .is_none_or(|(form, metrics)| match form {
                0 => metric == metric_name(metrics[0]),
                1 => metrics.iter().any(|m| metric == metric_name(*m)),
                _ => like(PATTERNS[metrics[0] as usize % 4], metric),
            })
            && self
                .viewers
                .as_ref()
                .is_none_or(|v| among(v.as_slice(), viewer))
            && self
                .sources
                .as_ref()
                .is_none_or(|s| among(s.as_slice(), owner))
            && self.inherited.is_none_or(|i| i == inherited)
            && self.mixed.is_none_or(|a| step < a || !inherited)
    }
}

fn expected_rows(
    oracle: &Oracle,
    ids: &[u64],
    viewer: usize,
    filter: Option<&str>,
) -> Vec<Vec<String>> {
    filtered_rows(oracle, ids, viewer, filter, None)
}

fn filtered_rows(
    oracle: &Oracle,
    ids: &[u64],
    viewer: usize,
    filter: Option<&str>,
    pushed: Option<&Filter>,
) -> Vec<Vec<String>> {
    oracle
        .view(viewer)
        .into_iter()
        .filter(|((m, _), _)| filter.is_none_or(|f| f == m))
        .filter(|((m, s), (owner, _))| {
            pushed.is_none_or(|f| f.holds(ids.len(), viewer, *owner, m, *s))
        })
        .map(|((m, s), (owner, v))| {
            vec![
                ids[viewer].to_string(),
                ids[owner].to_string(),
                m,
                s.to_string(),
                format!("{v:?}"),
                (owner != viewer).to_string(),
            ]
        })
        .collect()
}

async fn check(ops: Vec<Op>, filters: Vec<Filter>, on: On) {
    let engine = Engine::open("memory://").await.unwrap();
    // The cluster's executors run in this process, so they read its
    // in-memory store through the engine's runtime.
    let runner: Arc<dyn PlanRunner> = match on {
        On::ThisProcess => Arc::new(runner::InProcess),
        On::Cluster => {
            let cluster = standalone::start(2, 1, engine.runtime().clone())
                .await
                .unwrap();
            Arc::new(Remote::new(&cluster).unwrap())
        }
    };
    let runner = runner.as_ref();
    let mut oracle = Oracle {
        parent: vec![],
        own: vec![],
    };
    let mut ids: Vec<u64> = vec![];
    for op in std::iter::once(Op::Root(vec![(0, 0), (0, 5)])).chain(ops) {
        let run = ids.len();
        let (parent, raw) = match op {
            Op::Root(raw) => {
                let created = engine
                    .create_run(NewRun {
                        project: "p".into(),
                        name: format!("r{run}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                ids.push(created.id);
                (None, raw)
            }
            Op::Fork {
                target,
                frac,
                points,
            } => {
                let target = target % ids.len();
                let max = oracle.view(target).keys().map(|(_, s)| *s).max();
                let step = (max.unwrap_or(0) as f64 * frac).round() as u64 + u64::from(frac > 1.0);
                let result = engine
                    .fork_run(ForkRequest::new(ids[target].to_string(), step))
                    .await;
                match max {
                    Some(max) if step <= max => {
                        let fork = result.unwrap();
                        let parent = oracle.resolve(target, step);
                        assert_eq!(
                            fork.parent.id, ids[parent],
                            "resolution of fork of {target} at {step}"
                        );
                        ids.push(fork.run.id);
                        (Some((parent, step)), points)
                    }
                    _ => {
                        assert!(matches!(result, Err(Error::InvalidInput(_))), "{result:?}");
                        continue;
                    }
                }
            }
        };
        let (points, own) = to_points(run, &raw);
        engine
            .write_points(&ids[run].to_string(), points)
            .await
            .unwrap();
        oracle.parent.push(parent);
        oracle.own.push(own);
    }
    let cols = "run_id, source_run_id, metric, step, value, inherited";
    for run in 0..ids.len() {
        let got = rows(
            &engine,
            runner,
            &format!(
                "SELECT {cols} FROM stitched_metrics({}) ORDER BY metric, step",
                ids[run]
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            got,
            expected_rows(&oracle, &ids, run, None),
            "stitched_metrics of run {run}"
        );
        let got = rows(
            &engine,
            runner,
            &format!(
                "SELECT {cols} FROM stitched_metrics({}, 'loss') ORDER BY metric, step",
                ids[run]
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            got,
            expected_rows(&oracle, &ids, run, Some("loss")),
            "stitched loss of run {run}"
        );
    }
    let roots: Vec<usize> = (0..ids.len())
        .filter(|r| oracle.parent[*r].is_none())
        .collect();
    for root in roots {
        let members: Vec<usize> = (0..ids.len()).filter(|r| oracle.root(*r) == root).collect();
        for filter in [None, Some("val/loss"), Some("sys/gpu")] {
            let mut expected: Vec<Vec<String>> = members
                .iter()
                .flat_map(|m| expected_rows(&oracle, &ids, *m, filter))
                .collect();
            expected.sort();
            let arg = filter.map_or(String::new(), |f| format!(", '{f}'"));
            let mut got = rows(
                &engine,
                runner,
                &format!("SELECT {cols} FROM family_metrics({}{arg})", ids[root]),
            )
            .await
            .unwrap();
            got.sort();
            assert_eq!(
                got, expected,
                "family_metrics of root {root} filter {filter:?}"
            );
            // Of one metric the stitching operator declares its output ordered
            // by (run_id, step), which spares the sort: the order must be real.
            if filter.is_some() {
                let number = |row: &Vec<String>, i: usize| row[i].parse::<u64>().unwrap();
                expected.sort_by_key(|row| (number(row, 0), number(row, 3)));
                let got = rows(
                    &engine,
                    runner,
                    &format!(
                        "SELECT {cols} FROM family_metrics({}{arg}) ORDER BY run_id, step",
                        ids[root]
                    ),
                )
                .await
                .unwrap();
                assert_eq!(got, expected, "ordered family_metrics of root {root}");
            }
        }
        let family = rows(
            &engine,
            runner,
            &format!(
                "SELECT run_id FROM family_runs({}) ORDER BY run_id",
                ids[root]
            ),
        )
        .await
        .unwrap();
        let expected: Vec<Vec<String>> =
            members.iter().map(|m| vec![ids[*m].to_string()]).collect();
        assert_eq!(family, expected);
    }
    check_filters(&engine, runner, &oracle, &ids, &filters).await;
}

/// Filtered views (the filters pushed into the lineage functions) against
/// the oracle's views filtered row by row.
async fn check_filters(
    engine: &Engine,
    runner: &dyn PlanRunner,
    oracle: &Oracle,
    ids: &[u64],
    filters: &[Filter],
) {
    let cols = "run_id, source_run_id, metric, step, value, inherited";
    for (i, filter) in filters.iter().enumerate() {
        let clause = filter.sql(ids);
        let run = i % ids.len();
        let root = oracle.root(run);
        let members: Vec<usize> = (0..ids.len()).filter(|r| oracle.root(*r) == root).collect();
        for (call, viewers, metric) in [
            (format!("stitched_metrics({})", ids[run]), vec![run], None),
            (
                format!("stitched_metrics({}, 'loss')", ids[run]),
                vec![run],
                Some("loss"),
            ),
            (
                format!("family_metrics({})", ids[root]),
                members.clone(),
                None,
            ),
            (
                format!("family_metrics({}, 'acc')", ids[root]),
                members,
                Some("acc"),
            ),
            (
                "project_metrics('p')".to_string(),
                (0..ids.len()).collect(),
                None,
            ),
        ] {
            let mut expected: Vec<Vec<String>> = viewers
                .iter()
                .flat_map(|v| filtered_rows(oracle, ids, *v, metric, Some(filter)))
                .collect();
            expected.sort();
            let sql = format!("SELECT {cols} FROM {call} WHERE {clause}");
            let mut got = rows(engine, runner, &sql).await.unwrap();
            got.sort();
            assert_eq!(got, expected, "{sql}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn stitched_and_family_views_match_the_oracle(
        ops in prop::collection::vec(op(), 1..9),
        filters in prop::collection::vec(filter(), 1..4),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(ops, filters, On::ThisProcess));
    }
}

proptest! {
    // A handful: each case starts a scheduler and two executors.
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn views_computed_on_a_cluster_match_the_oracle(
        ops in prop::collection::vec(op(), 1..7),
        filters in prop::collection::vec(filter(), 1..3),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(ops, filters, On::Cluster));
    }
}
