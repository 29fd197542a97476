//! `forkline demo`: a realistic store of forked training runs, written through
//! the normal catalog and write path, then every `queries/*.sql` run against it.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::json;

use crate::catalog::{ForkRequest, NewRun, RunStatus, RunUpdate};
use crate::engine::Engine;
use crate::error::Result;
use crate::ingest::MetricPoint;
use crate::interfaces::format::Format;

/// Steps written per commit, as a training loop flushing periodically would.
const STEPS_PER_COMMIT: u64 = 2_000;
/// `val/loss` is evaluated every this many steps.
const EVAL_EVERY: u64 = 50;

/// A fork in a family plan: fork member `of` at `step`, change the lr by
/// `lr_factor`, and log `own_steps` further steps.
struct ForkPlan {
    of: usize,
    step: u64,
    lr_factor: f64,
    own_steps: u64,
}

struct FamilyPlan {
    project: &'static str,
    name: &'static str,
    base_lr: f64,
    root_steps: u64,
    forks: Vec<ForkPlan>,
}

/// Every step count of the plans is multiplied by this (≈1.3M points in all).
const SCALE: u64 = 2;

fn fork(of: usize, step: u64, lr_factor: f64, own_steps: u64) -> ForkPlan {
    ForkPlan {
        of,
        step: step * SCALE,
        lr_factor,
        own_steps: own_steps * SCALE,
    }
}

/// Four families over two projects: forks of forks down to depth 5, siblings,
/// and forks whose step lands inside an ancestor's segment.
fn plans() -> Vec<FamilyPlan> {
    vec![
        FamilyPlan {
            project: "vision-sweep",
            name: "resnet50-baseline",
            base_lr: 0.1,
            root_steps: 8_000 * SCALE,
            forks: vec![
                fork(0, 3_000, 0.3, 6_000),  // 1: depth 1
                fork(1, 6_000, 0.5, 4_000),  // 2: depth 2
                fork(2, 8_000, 0.5, 3_000),  // 3: depth 3
                fork(3, 9_500, 0.3, 2_500),  // 4: depth 4
                fork(4, 11_000, 0.5, 2_000), // 5: depth 5
                fork(4, 2_000, 2.0, 4_000),  // 6: lands in the root's segment
                fork(4, 5_000, 0.1, 3_000),  // 7: lands in run 1's segment
                fork(0, 5_000, 0.5, 3_000),  // 8: sibling of 1
            ],
        },
        FamilyPlan {
            project: "vision-sweep",
            name: "vit-small",
            base_lr: 0.003,
            root_steps: 6_000 * SCALE,
            forks: vec![
                fork(0, 2_000, 0.5, 5_000),
                fork(0, 4_000, 3.0, 3_000),
                fork(1, 5_000, 0.3, 3_000),
                fork(3, 1_500, 1.5, 4_000),
            ],
        },
        FamilyPlan {
            project: "lm-pretrain",
            name: "gpt-125m",
            base_lr: 0.0006,
            root_steps: 10_000 * SCALE,
            forks: vec![
                fork(0, 4_000, 0.5, 6_000),
                fork(1, 7_000, 0.5, 5_000),
                fork(2, 10_000, 0.3, 3_000),
                fork(3, 12_000, 0.5, 2_000),
                fork(4, 3_000, 2.0, 4_000),
                fork(2, 8_500, 1.5, 3_000),
            ],
        },
        FamilyPlan {
            project: "lm-pretrain",
            name: "gpt-350m",
            base_lr: 0.0003,
            root_steps: 8_000 * SCALE,
            forks: vec![
                fork(0, 5_000, 0.5, 4_000),
                fork(0, 6_000, 0.3, 3_000),
                fork(1, 8_000, 0.3, 3_000),
            ],
        },
    ]
}

/// The simulated trainer state at one step of a stitched view.
#[derive(Clone, Copy)]
struct State {
    loss: f64,
    lr: f64,
}

/// Simulates `steps` steps after `start`, continuing from `prev`.
fn simulate(
    rng: &mut SmallRng,
    prev: Option<State>,
    base_lr: f64,
    lr_scale: f64,
    first_step: u64,
    steps: u64,
    floor: f64,
) -> (Vec<State>, Vec<MetricPoint>) {
    let noise = Normal::new(0.0, 1.0).expect("valid normal");
    let mut state = prev.unwrap_or(State { loss: 6.0, lr: 0.0 });
    let mut states = Vec::with_capacity(steps as usize);
    let mut points = Vec::with_capacity(steps as usize * 4);
    let lr_max = base_lr * lr_scale;
    for i in 0..steps {
        let step = first_step + i;
        // Warm-up for roots, then a slow cosine-like decay; forks restart from their own lr.
        let warm = if prev.is_none() {
            ((step + 1) as f64 / 500.0).min(1.0)
        } else {
            1.0
        };
        let decay = 0.5 * (1.0 + (std::f64::consts::PI * (i as f64 / (steps as f64 * 1.6))).cos());
        let lr = lr_max * warm * (0.1 + 0.9 * decay);
        // A higher lr learns faster but plateaus higher (SGD noise floor): lowering it
        // at a fork gives the familiar drop to a lower plateau, raising it a bump.
        let rel = lr / base_lr;
        let plateau = floor * (0.75 + 0.35 * rel.min(4.0));
        let rate = 0.0009 * rel.min(2.0) + 0.0001;
        state.loss += rate * (plateau - state.loss);
        state.lr = lr;
        states.push(state);
        let observed = state.loss * (1.0 + 0.04 * noise.sample(rng));
        let grad_norm = (0.4 + 2.5 * state.loss / 6.0)
            * (1.0 + 0.25 * noise.sample(rng)).abs()
            * (1.0 + rel * 0.2);
        let acc = (1.0 - (state.loss / 6.0).powf(0.7)).clamp(0.0, 1.0) + noise.sample(rng) * 0.005;
        points.push(MetricPoint::new("train/loss", step, observed));
        points.push(MetricPoint::new("lr", step, lr));
        points.push(MetricPoint::new("grad_norm", step, grad_norm));
        points.push(MetricPoint::new("train/acc", step, acc.clamp(0.0, 1.0)));
        let throughput = 2_400.0 * (1.0 + 0.03 * noise.sample(rng))
            - if step.is_multiple_of(1_000) {
                900.0
            } else {
                0.0
            };
        points.push(MetricPoint::new("throughput", step, throughput));
        points.push(MetricPoint::new(
            "gpu/mem_gb",
            step,
            31.5 + 0.2 * noise.sample(rng).abs(),
        ));
        if step.is_multiple_of(EVAL_EVERY) {
            let gap = 1.04 + 0.02 * rng.random::<f64>() + step as f64 / 400_000.0;
            points.push(MetricPoint::new(
                "val/loss",
                step,
                state.loss * gap * (1.0 + 0.01 * noise.sample(rng)),
            ));
        }
    }
    (states, points)
}

async fn write_chunked(
    engine: &Engine,
    run: &str,
    points: Vec<MetricPoint>,
    bar: &ProgressBar,
) -> Result<()> {
    let mut chunk = Vec::new();
    let mut chunk_end = None;
    for p in points {
        let end = *chunk_end.get_or_insert(p.step / STEPS_PER_COMMIT);
        if p.step / STEPS_PER_COMMIT != end {
            bar.inc(chunk.len() as u64);
            engine.write_points(run, std::mem::take(&mut chunk)).await?;
            chunk_end = Some(p.step / STEPS_PER_COMMIT);
        }
        chunk.push(p);
    }
    if !chunk.is_empty() {
        bar.inc(chunk.len() as u64);
        engine.write_points(run, chunk).await?;
    }
    Ok(())
}

/// The repository's `queries/*.sql`, in name order, as compiled into the binary.
const QUERIES: &[(&str, &str)] = &[
    (
        "01_projects.sql",
        include_str!("../queries/01_projects.sql"),
    ),
    (
        "02_family_tree.sql",
        include_str!("../queries/02_family_tree.sql"),
    ),
    ("03_lineage.sql", include_str!("../queries/03_lineage.sql")),
    (
        "04_resolution.sql",
        include_str!("../queries/04_resolution.sql"),
    ),
    (
        "05_stitched_view.sql",
        include_str!("../queries/05_stitched_view.sql"),
    ),
    (
        "06_leaderboard.sql",
        include_str!("../queries/06_leaderboard.sql"),
    ),
    (
        "07_fork_effect.sql",
        include_str!("../queries/07_fork_effect.sql"),
    ),
];

/// Builds the demo store (unless already present) and runs the demo queries:
/// those of `queries` when given, else the ones compiled in.
pub async fn run(engine: &Engine, queries: Option<&Path>, seed: u64) -> Result<()> {
    let catalog = engine.catalog().await?;
    if catalog.projects().iter().any(|p| p == "vision-sweep") {
        println!(
            "demo store already present at {}; running the queries",
            engine.store().location().root
        );
    } else {
        build(engine, seed).await?;
    }
    match queries {
        Some(dir) => run_queries(engine, dir).await,
        None => {
            for (name, sql) in QUERIES {
                run_query(engine, &format!("queries/{name}"), sql).await?;
            }
            Ok(())
        }
    }
}

/// Writes the demo families through the catalog API and the write path.
pub async fn build(engine: &Engine, seed: u64) -> Result<()> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} points ({per_sec})")
            .expect("valid template"),
    );
    let mut total_runs = 0;
    for plan in plans() {
        bar.set_message(format!("{} / {}", plan.project, plan.name));
        let floor = 0.25 + rng.random::<f64>() * 0.3;
        let root = engine
            .create_run(NewRun {
                project: plan.project.into(),
                name: plan.name.into(),
                config: serde_json::from_value(json!({
                    "lr": plan.base_lr,
                    "optimizer": {"name": "adamw", "betas": [0.9, 0.95], "weight_decay": 0.05},
                    "batch_size": 256,
                    "schedule": "cosine",
                }))
                .expect("object literal"),
                tags: vec!["demo".into(), "baseline".into()],
                external_id: None,
            })
            .await?;
        let (states, points) =
            simulate(&mut rng, None, plan.base_lr, 1.0, 0, plan.root_steps, floor);
        write_chunked(engine, &root.display_id, points, &bar).await?;
        // Stitched trainer state of every member, indexed by step.
        let mut views = vec![states];
        let mut members = vec![root.display_id.clone()];
        let mut lr_scales = vec![1.0];
        for f in plan.forks {
            let scale = lr_scales[f.of] * f.lr_factor;
            let mut req = ForkRequest::new(members[f.of].clone(), f.step);
            // The name records the requested run, so queries can show where resolution moved the parent.
            req.name = Some(format!("{}/{}@{}", plan.name, members[f.of], f.step));
            req.config = serde_json::from_value(
                json!({"lr": plan.base_lr * scale, "optimizer": {"lr_scale": scale}}),
            )
            .expect("object literal");
            req.tags = vec![format!("lr-x{}", f.lr_factor)];
            req.inherit_tags = true;
            let outcome = engine.fork_run(req).await?;
            let mut view: Vec<State> = views[f.of][..=f.step as usize].to_vec();
            let (states, points) = simulate(
                &mut rng,
                view.last().copied(),
                plan.base_lr,
                scale,
                f.step + 1,
                f.own_steps,
                floor,
            );
            write_chunked(engine, &outcome.run.display_id, points, &bar).await?;
            view.extend(states);
            views.push(view);
            members.push(outcome.run.display_id.clone());
            lr_scales.push(scale);
        }
        for (i, member) in members.iter().enumerate() {
            let status = match i % 7 {
                5 => RunStatus::Failed,
                6 => RunStatus::Running,
                _ => RunStatus::Completed,
            };
            engine.update_run(member, RunUpdate::Status(status)).await?;
        }
        total_runs += members.len();
    }
    bar.finish_and_clear();
    println!(
        "demo store written to {}: {total_runs} runs, {} points",
        engine.store().location().root,
        bar.position()
    );
    Ok(())
}

/// Runs every `.sql` file of `dir` in name order and prints each result as a table.
pub async fn run_queries(engine: &Engine, dir: &Path) -> Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| crate::Error::invalid(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    for file in files {
        let sql = std::fs::read_to_string(&file)?;
        run_query(engine, &file.display().to_string(), &sql).await?;
    }
    Ok(())
}

/// Prints a query's name and leading comment, then its result as a table.
async fn run_query(engine: &Engine, name: &str, sql: &str) -> Result<()> {
    println!("\n== {name} ==");
    for line in sql.lines().take_while(|l| l.starts_with("--")) {
        println!("{line}");
    }
    crate::interfaces::cli::print_query(engine, sql, Format::Table, std::io::stdout().lock()).await
}

#[cfg(test)]
mod tests {
    /// A query added to `queries/` must be compiled in too, or `demo` would skip it.
    #[test]
    fn the_compiled_queries_are_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        on_disk.sort();
        let compiled: Vec<(String, String)> = super::QUERIES
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        assert_eq!(compiled, on_disk);
    }
}
