//! `forkline bench-data`: a synthetic store for benchmarks, written
//! deterministically from a seed through the public engine API.
//!
//! - Project [`PROJECT`]; `round(1000 · scale)` runs in families of
//!   [`FAMILY_SIZE`] (the last family takes the remainder).
//! - Each family is a random tree of forks of forks, at most [`MAX_DEPTH`]
//!   deep; a family of at least `MAX_DEPTH + 1` runs has a chain reaching
//!   exactly that depth (members 1..=8 fork each other in turn).
//! - Every run logs [`METRICS`] (20 names) at each of [`LOGGED_STEPS`]
//!   consecutive steps. A fork at step `f` starts logging up to
//!   [`MAX_RELOG`] steps below `f + 1`: those points are stored, but the
//!   stitched view takes those steps from the ancestor. So a store holds exactly
//!   `runs × 20 × 2,500` points (50M at scale 1).
//! - Fork steps are drawn uniformly over the parent's own stitched step range,
//!   so the fork resolves to the parent itself.
//! - Values are noisy curves computed in `f32` (stored as `f64`); the noise is
//!   a hash of (seed, run, metric, step), so the rows do not depend on the
//!   order in which they are written.
//!
//! Runs are created level by level (every root, then every depth-1 fork, …):
//! a fork is validated against its parent's committed points. By default a
//! level's points go in few large commits (whole runs, up to
//! [`COMMIT_POINTS`] points each), so files are large and sorted. With
//! `commits = Some(n)` the same points are split into exactly `n` commits in
//! a live-ingest-like order: within a level, windows of [`WINDOW_STEPS`]
//! steps of every run in turn, cut into commits of equal size.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::catalog::{ForkRequest, NewRun, RunId};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ingest::{MetricPoint, PointBatch};

/// Project every generated run belongs to.
pub const PROJECT: &str = "bench";
/// Runs per family (scale 1 = 1,000 runs = 10 families).
pub const FAMILY_SIZE: usize = 100;
/// Deepest fork level of a family.
pub const MAX_DEPTH: usize = 8;
/// Consecutive steps every run logs (each with every metric).
pub const LOGGED_STEPS: u64 = 2_500;
/// A fork re-logs at most this many steps at or below its fork step.
pub const MAX_RELOG: u64 = 200;
/// Default commit size: a level's runs are committed whole, up to this many points per commit.
pub const COMMIT_POINTS: usize = 4_000_000;
/// With an explicit commit count: steps of one run per window of the live-ingest order.
pub const WINDOW_STEPS: u64 = 10;
/// The metrics every run logs at every step.
pub const METRICS: [&str; 20] = [
    "train/loss",
    "val/loss",
    "train/acc",
    "val/acc",
    "train/top5",
    "val/top5",
    "train/ppl",
    "val/ppl",
    "lr",
    "momentum",
    "grad_norm",
    "param_norm",
    "update_ratio",
    "loss_scale",
    "throughput",
    "step_time",
    "data_time",
    "gpu/mem_gb",
    "tokens_seen",
    "ema/val_loss",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// 1.0 ≈ 1,000 runs, 50M points; grows linearly.
    pub scale: f64,
    /// Seed of every random choice and value.
    pub seed: u64,
    /// Split the points into exactly this many small commits (live-ingest order).
    pub commits: Option<u64>,
    /// With `commits`: compact after every this many commits, as `serve`
    /// does while clients log, so the table never holds thousands of files.
    pub compact_every: Option<u64>,
}

/// One planned run.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Family number, from 0.
    pub family: usize,
    /// Index within the family (0 is the root; parents come before children).
    pub index: usize,
    /// Index of the parent within the family.
    pub parent: Option<usize>,
    /// Fork depth (0 for the root).
    pub depth: usize,
    /// Last inherited step (forks only).
    pub fork_step: Option<u64>,
    /// First step the run logs (≤ `fork_step` when it re-logs inherited steps).
    pub first_step: u64,
    /// Seed of the run's noise.
    seed: u64,
    /// The run's curve changes after each fork of its chain, root first:
    /// (fork step, relative change of the loss level).
    chain: Vec<(u64, f32)>,
    /// Wall-clock time of the first logged step, microseconds since the epoch.
    start_us: i64,
    /// Microseconds per step.
    step_us: i64,
}

impl PlannedRun {
    /// Last logged step.
    pub fn last_step(&self) -> u64 {
        self.first_step + LOGGED_STEPS - 1
    }

    /// First step of the run's own segment.
    pub fn own_from(&self) -> u64 {
        self.fork_step.map_or(0, |f| f + 1)
    }

    fn time_at(&self, step: u64) -> i64 {
        self.start_us + (step as i64 - self.first_step as i64) * self.step_us
    }

    /// Appends the run's points of logged steps `from..to` (step-major, like a logger).
    fn points(&self, from: u64, to: u64, out: &mut Vec<MetricPoint>) {
        for step in from..to {
            let x = step as f32;
            // Each fork of the chain moves the loss level smoothly after its fork step.
            let mut level = 1.0f32;
            for &(f, delta) in &self.chain {
                if step > f {
                    level *= 1.0 + delta * (1.0 - (-((step - f) as f32) / 300.0).exp());
                }
            }
            let decay = (-x / 1_800.0).exp();
            let loss = (0.35 + 2.4 * decay + 0.5 / (1.0 + x / 250.0)) * level;
            let time_us = Some(self.time_at(step));
            for (m, name) in METRICS.iter().enumerate() {
                let n = noise(self.seed, m as u64, step);
                let value: f32 = match m {
                    0 => loss * (1.0 + 0.04 * n),
                    1 => loss * 1.08 * (1.0 + 0.01 * n),
                    2 => (1.0 - 0.28 * loss).clamp(0.0, 1.0) + 0.01 * n,
                    3 => (1.0 - 0.31 * loss).clamp(0.0, 1.0) + 0.004 * n,
                    4 => (1.0 - 0.08 * loss).clamp(0.0, 1.0) + 0.005 * n,
                    5 => (1.0 - 0.09 * loss).clamp(0.0, 1.0) + 0.002 * n,
                    6 => (loss * (1.0 + 0.04 * n)).exp(),
                    7 => (loss * 1.08 * (1.0 + 0.01 * n)).exp(),
                    8 => 3e-4 * (0.1 + 0.9 * decay) / level,
                    9 => 0.9 + 0.05 * (1.0 - decay),
                    10 => (0.4 + 2.0 * loss / 3.0) * (1.0 + 0.25 * n).abs(),
                    11 => 120.0 + 30.0 * (1.0 - decay) + 0.01 * n,
                    12 => 1e-3 * (0.1 + 0.9 * decay) * (1.0 + 0.2 * n),
                    13 => {
                        if (step / 500) % 2 == 0 {
                            65_536.0
                        } else {
                            32_768.0
                        }
                    }
                    14 => 2_400.0 * (1.0 + 0.03 * n),
                    15 => 0.21 * (1.0 + 0.05 * n.abs()),
                    16 => 0.012 * (1.0 + 0.5 * n.abs()),
                    17 => 31.5 + 0.2 * n.abs(),
                    18 => (step + 1) as f32 * 524_288.0,
                    _ => loss * 1.07 * (1.0 + 0.002 * n),
                };
                out.push(MetricPoint {
                    metric: (*name).to_string(),
                    step,
                    value: value as f64,
                    time_us,
                });
            }
        }
    }
}

/// A 64-bit mix (splitmix64 finalizer).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Noise in [-1, 1] (triangular), a pure function of its arguments.
fn noise(seed: u64, metric: u64, step: u64) -> f32 {
    let h = mix(seed ^ mix(metric << 40 ^ step));
    let a = (h >> 40) as f32 / (1u64 << 24) as f32;
    let b = ((h >> 16) & 0xFF_FFFF) as f32 / (1u64 << 24) as f32;
    a + b - 1.0
}

/// The runs to create, in creation order (level, family, index).
pub fn plan(spec: &BenchSpec) -> Result<Vec<PlannedRun>> {
    let runs = check(spec)?;
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let mut all = Vec::with_capacity(runs);
    let families = runs.div_ceil(FAMILY_SIZE);
    // 2026-01-01T00:00:00Z
    let epoch_us: i64 = 1_767_225_600_000_000;
    for family in 0..families {
        let size = FAMILY_SIZE.min(runs - family * FAMILY_SIZE);
        let mut members: Vec<PlannedRun> = Vec::with_capacity(size);
        for index in 0..size {
            let run_seed = mix(spec.seed ^ mix(((family as u64) << 32) | index as u64));
            let step_us = rng.random_range(200_000..450_000i64);
            if index == 0 {
                members.push(PlannedRun {
                    family,
                    index,
                    parent: None,
                    depth: 0,
                    fork_step: None,
                    first_step: 0,
                    seed: run_seed,
                    chain: Vec::new(),
                    start_us: epoch_us
                        + family as i64 * 86_400_000_000
                        + rng.random_range(0..3_600_000_000i64),
                    step_us,
                });
                continue;
            }
            let parent = if index <= MAX_DEPTH && size > MAX_DEPTH {
                index - 1
            } else {
                loop {
                    let p = rng.random_range(0..index);
                    if members[p].depth < MAX_DEPTH {
                        break p;
                    }
                }
            };
            let p = &members[parent];
            let fork = rng.random_range(p.own_from()..=p.last_step());
            let relog = rng.random_range(0..=MAX_RELOG.min(fork + 1));
            let first_step = fork + 1 - relog;
            let mut chain = p.chain.clone();
            chain.push((fork, rng.random_range(-0.25f32..0.15)));
            // The fork starts a little after its parent logged the fork step.
            let start_us = p.time_at(fork) + rng.random_range(60_000_000..7_200_000_000i64);
            members.push(PlannedRun {
                family,
                index,
                parent: Some(parent),
                depth: p.depth + 1,
                fork_step: Some(fork),
                first_step,
                seed: run_seed,
                chain,
                start_us,
                step_us,
            });
        }
        all.extend(members);
    }
    // Creation order: level by level, then family, then index (parents first).
    all.sort_by_key(|r| (r.depth, r.family, r.index));
    if let Some(n) = spec.commits {
        let levels = all.iter().map(|r| r.depth).max().unwrap_or(0) as u64 + 1;
        let steps = all.len() as u64 * LOGGED_STEPS;
        if n < levels {
            return Err(Error::invalid(format!(
                "--commits {n} is fewer than the {levels} fork levels, which are committed one after another"
            )));
        }
        if n > steps {
            return Err(Error::invalid(format!(
                "--commits {n} is more than the {steps} (run, step) pairs to write"
            )));
        }
    }
    Ok(all)
}

/// Validates the scale and commit count; returns the number of runs.
pub fn check(spec: &BenchSpec) -> Result<usize> {
    if !spec.scale.is_finite() || spec.scale <= 0.0 {
        return Err(Error::invalid(format!(
            "--scale must be a finite number > 0, got {}",
            spec.scale
        )));
    }
    let runs = (spec.scale * 1000.0).round();
    if runs < 1.0 {
        return Err(Error::invalid(format!(
            "--scale {} gives no run (runs = round(1000 × scale)); use at least 0.0005",
            spec.scale
        )));
    }
    if runs > 10_000_000.0 {
        return Err(Error::invalid(format!(
            "--scale {} is too large",
            spec.scale
        )));
    }
    let runs = runs as usize;
    if spec.commits == Some(0) {
        return Err(Error::invalid("--commits must be at least 1"));
    }
    match (spec.compact_every, spec.commits) {
        (Some(0), _) => return Err(Error::invalid("--compact-every must be at least 1")),
        (Some(_), None) => {
            return Err(Error::invalid(
                "--compact-every needs --commits (one-batch stores have few files)",
            ));
        }
        _ => {}
    }
    Ok(runs)
}

/// Points every run logs.
pub fn points_per_run() -> u64 {
    LOGGED_STEPS * METRICS.len() as u64
}

/// Splits `total` commits over levels in proportion to their points (largest
/// remainder, at least one per level).
fn commits_per_level(total: u64, level_points: &[u64]) -> Vec<u64> {
    let all: u64 = level_points.iter().sum();
    let mut out: Vec<u64> = level_points
        .iter()
        .map(|&p| (total as u128 * p as u128 / all as u128) as u64)
        .collect();
    for c in out.iter_mut() {
        *c = (*c).max(1);
    }
    let mut assigned: u64 = out.iter().sum();
    // Hand out what is left by largest remainder; take back from the largest levels if over.
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse((total as u128 * level_points[i] as u128) % all as u128)
    });
    let mut k = 0;
    while assigned < total {
        out[order[k % order.len()]] += 1;
        assigned += 1;
        k += 1;
    }
    while assigned > total {
        let i = (0..out.len()).max_by_key(|&i| out[i]).expect("a level");
        out[i] -= 1;
        assigned -= 1;
    }
    out
}

/// Writes the benchmark store; prints a progress bar and a final summary line.
pub async fn run(engine: &Engine, spec: &BenchSpec) -> Result<()> {
    let planned = plan(spec)?;
    let catalog = engine.catalog().await?;
    if catalog.projects().iter().any(|p| p == PROJECT) {
        return Err(Error::invalid(format!(
            "the store {} already has a `{PROJECT}` project; use an empty store",
            engine.store().location().root
        )));
    }
    let started = Instant::now();
    let total_points = planned.len() as u64 * points_per_run();
    let bar = ProgressBar::new(total_points);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} points ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let levels = planned.iter().map(|r| r.depth).max().unwrap_or(0) + 1;
    let level_points: Vec<u64> = (0..levels)
        .map(|d| planned.iter().filter(|r| r.depth == d).count() as u64 * points_per_run())
        .collect();
    let level_commits = spec.commits.map(|n| commits_per_level(n, &level_points));
    // Store ids of each family's members, by index.
    let families = planned.iter().map(|r| r.family).max().unwrap_or(0) + 1;
    let mut ids: Vec<Vec<Option<RunId>>> = (0..families)
        .map(|f| vec![None; planned.iter().filter(|r| r.family == f).count()])
        .collect();
    let mut writer = Writer {
        engine,
        bar: &bar,
        commits: 0,
        compact_every: spec.compact_every,
    };
    let mut level_start = 0;
    for level in 0..levels {
        bar.set_message(format!("level {level}"));
        let level_end = level_start
            + planned[level_start..]
                .iter()
                .take_while(|r| r.depth == level)
                .count();
        let runs = &planned[level_start..level_end];
        let mut created = Vec::with_capacity(runs.len());
        for r in runs {
            let id = create(engine, r, &ids).await?;
            ids[r.family][r.index] = Some(id);
            created.push(id);
        }
        match &level_commits {
            None => {
                let mut batch = PointBatch::new();
                let mut buf = Vec::new();
                for (r, &id) in runs.iter().zip(&created) {
                    buf.clear();
                    r.points(r.first_step, r.last_step() + 1, &mut buf);
                    batch.extend(id, buf.drain(..))?;
                    if batch.len() >= COMMIT_POINTS {
                        writer.flush(&mut batch).await?;
                    }
                }
                writer.flush(&mut batch).await?;
            }
            Some(per_level) => {
                let n = per_level[level];
                let total = level_points[level];
                // Commit i ends after point floor((i + 1) · total / n) of the level's stream.
                let boundary = |i: u64| ((i as u128 + 1) * total as u128 / n as u128) as u64;
                let mut next = 0u64;
                let mut emitted = 0u64;
                let mut batch = PointBatch::new();
                let mut buf = Vec::new();
                let windows = LOGGED_STEPS.div_ceil(WINDOW_STEPS);
                for w in 0..windows {
                    for (r, &id) in runs.iter().zip(&created) {
                        buf.clear();
                        let from = r.first_step + w * WINDOW_STEPS;
                        let to = (from + WINDOW_STEPS).min(r.last_step() + 1);
                        r.points(from, to, &mut buf);
                        while !buf.is_empty() {
                            let room = (boundary(next) - emitted) as usize;
                            let take = room.min(buf.len());
                            batch.extend(id, buf.drain(..take))?;
                            emitted += take as u64;
                            if emitted == boundary(next) {
                                writer.flush(&mut batch).await?;
                                next += 1;
                            }
                        }
                    }
                }
                debug_assert_eq!(next, n);
            }
        }
        level_start = level_end;
    }
    bar.finish_and_clear();
    println!(
        "bench store written to {}: {} runs in {families} famil{}, {} points, {} commits, {} compactions, {:.1} s",
        engine.store().location().root,
        planned.len(),
        if families == 1 { "y" } else { "ies" },
        bar.position(),
        writer.commits,
        spec.compact_every.map_or(0, |every| writer.commits / every),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Creates (root) or forks one planned run; returns its id.
async fn create(engine: &Engine, r: &PlannedRun, ids: &[Vec<Option<RunId>>]) -> Result<RunId> {
    let config = json!({
        "lr": 3e-4,
        "batch_size": 256,
        "seed": r.seed % 10_000,
        "fork": {"depth": r.depth, "index": r.index},
    });
    let config = config.as_object().expect("object literal").clone();
    match (r.parent, r.fork_step) {
        (Some(parent), Some(step)) => {
            let parent_id = ids[r.family][parent].expect("parents are created first");
            let mut req = ForkRequest::new(parent_id.to_string(), step);
            req.name = Some(format!("family-{}-{}", r.family, r.index));
            req.config = config;
            let fork = engine.fork_run(req).await?;
            if fork.parent.id != parent_id || fork.fork_step != step {
                return Err(Error::invalid(format!(
                    "bench-data: fork of {parent_id} at {step} resolved to {} at {}",
                    fork.parent.id, fork.fork_step
                )));
            }
            Ok(fork.run.id)
        }
        _ => Ok(engine
            .create_run(NewRun {
                project: PROJECT.into(),
                name: format!("family-{}", r.family),
                config,
                tags: vec!["bench".into()],
                external_id: None,
            })
            .await?
            .id),
    }
}

/// Commits batches and counts them, compacting every `compact_every` commits.
struct Writer<'a> {
    engine: &'a Engine,
    bar: &'a ProgressBar,
    commits: u64,
    compact_every: Option<u64>,
}

impl Writer<'_> {
    async fn flush(&mut self, batch: &mut PointBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(batch);
        let n = self.engine.write_batch(batch).await?;
        self.bar.inc(n as u64);
        self.commits += 1;
        if self
            .compact_every
            .is_some_and(|every| self.commits.is_multiple_of(every))
        {
            let options = crate::compact::CompactOptions {
                min_ingest_files: 1,
                ..Default::default()
            };
            crate::compact::compact(self.engine, &options).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_deep() {
        let spec = BenchSpec {
            scale: 0.25,
            seed: 7,
            commits: None,
            compact_every: None,
        };
        let a = plan(&spec).unwrap();
        let b = plan(&spec).unwrap();
        assert_eq!(a.len(), 250);
        let key = |r: &PlannedRun| (r.family, r.index, r.parent, r.fork_step, r.first_step);
        assert_eq!(
            a.iter().map(key).collect::<Vec<_>>(),
            b.iter().map(key).collect::<Vec<_>>()
        );
        for f in 0..3 {
            let max = a.iter().filter(|r| r.family == f).map(|r| r.depth).max();
            assert_eq!(max, Some(MAX_DEPTH), "family {f}");
        }
        for r in a.iter().filter(|r| r.parent.is_some()) {
            let p = a
                .iter()
                .find(|p| p.family == r.family && Some(p.index) == r.parent)
                .unwrap();
            let f = r.fork_step.unwrap();
            assert!(p.own_from() <= f && f <= p.last_step());
            assert!(r.first_step <= f + 1 && f + 1 - r.first_step <= MAX_RELOG);
        }
    }

    #[test]
    fn commits_split_exactly() {
        assert_eq!(commits_per_level(10, &[5, 5]), vec![5, 5]);
        let c = commits_per_level(50, &[100, 300, 1, 1, 1]);
        assert_eq!(c.iter().sum::<u64>(), 50);
        assert!(c.iter().all(|&n| n >= 1));
        let c = commits_per_level(10_000, &[10, 20, 30, 5, 5, 5, 5, 5, 5]);
        assert_eq!(c.iter().sum::<u64>(), 10_000);
    }
}
