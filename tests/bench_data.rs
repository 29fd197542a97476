//! `forkline bench-data` from the shell: deterministic, deep, the documented
//! point count, re-logged steps below fork steps, and `--commits` splitting the
//! same rows into many commits.

mod common;

use std::collections::HashMap;

use common::{cli, commit_versions, is_local, list_objects, temp_store};

/// Scale 0.02: one family of 20 runs, 20 × 20 × 2,500 points.
const SCALE: &str = "0.02";
const RUNS: usize = 20;
const POINTS: usize = RUNS * 20 * 2_500;

fn sql(store: &str, query: &str) -> String {
    let (ok, out, err) = cli(store, &["sql", "--format", "csv", query]);
    assert!(ok, "{query}: {err}");
    out
}

fn generate(store: &str, extra: &[&str]) -> String {
    let mut args = vec!["bench-data", "--scale", SCALE];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(store, &args);
    assert!(ok, "bench-data {extra:?}: {err}");
    out
}

/// `(id, display_id, name, parent_id, fork_step)` of every run, by id.
fn structure(store: &str) -> String {
    sql(
        store,
        "SELECT id, project, display_id, name, experiment, parent_id, fork_step FROM runs ORDER BY id",
    )
}

fn points(store: &str) -> String {
    sql(
        store,
        "SELECT run_id, metric, step, value, time FROM metrics ORDER BY run_id, metric, step",
    )
}

/// Latest version of the metrics table, from its Delta log.
fn metrics_version(store: &str) -> u64 {
    *commit_versions(store, "metrics").last().unwrap()
}

#[test]
fn bench_data_is_deterministic_deep_and_complete() {
    let (_a_dir, a) = temp_store();
    let (_b_dir, b) = temp_store();
    let out = generate(&a, &[]);
    assert!(
        out.contains(&format!("{RUNS} runs")) && out.contains(&format!("{POINTS} points")),
        "{out}"
    );
    generate(&b, &[]);

    // Same seed and scale: the same runs and the same rows.
    let runs = structure(&a);
    assert_eq!(runs, structure(&b));
    let rows = points(&a);
    assert_eq!(rows.lines().count(), POINTS + 1);
    assert!(rows == points(&b), "point rows differ between two runs");

    // A different seed gives a different store.
    let (_c_dir, c) = temp_store();
    generate(&c, &["--seed", "7"]);
    assert_ne!(structure(&c), runs);

    // Every run in project `bench`, one family of 20, depth 8 reached and never exceeded.
    let mut parent: HashMap<u64, Option<u64>> = HashMap::new();
    for line in runs.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[1], "bench", "{line}");
        parent.insert(f[0].parse().unwrap(), f[5].parse().ok());
    }
    assert_eq!(parent.len(), RUNS);
    let depth = |mut id: u64| {
        let mut d = 0;
        while let Some(p) = parent[&id] {
            id = p;
            d += 1;
        }
        d
    };
    let depths: Vec<usize> = parent.keys().map(|&id| depth(id)).collect();
    assert_eq!(depths.iter().max(), Some(&8), "{depths:?}");
    assert_eq!(depths.iter().filter(|&&d| d == 0).count(), 1);

    // 20 metrics, none a system metric, each run logs every metric at 2,500 steps.
    assert_eq!(
        sql(
            &a,
            "SELECT count(DISTINCT metric) AS n, sum(CASE WHEN metric LIKE 'sys/%' THEN 1 ELSE 0 END) AS sys FROM metrics"
        ),
        "n,sys\n20,0\n"
    );
    let per_run = sql(
        &a,
        "SELECT count(*) AS n FROM (SELECT run_id, metric, count(*) AS c FROM metrics GROUP BY run_id, metric) WHERE c <> 2500",
    );
    assert_eq!(per_run, "n\n0\n");

    // Some forks re-log steps at or below their fork step; the stitched view hides them.
    let relogged = sql(
        &a,
        "SELECT count(DISTINCT m.run_id) AS n FROM metrics m JOIN runs r ON m.run_id = r.id WHERE m.step <= r.fork_step",
    );
    let n: usize = relogged.lines().nth(1).unwrap().parse().unwrap();
    assert!(n > 0 && n < RUNS, "{relogged}");
    let leaked = sql(
        &a,
        "SELECT count(*) AS n FROM project_metrics('bench', 'train/loss') s JOIN runs r ON s.source_run_id = r.id \
         WHERE s.step <= r.fork_step",
    );
    assert_eq!(leaked, "n\n0\n");

    // The same rows split into 50 commits in live-ingest order, compacted
    // after every 20th as a serving process would.
    let (_d_dir, d) = temp_store();
    let out = generate(&d, &["--commits", "50", "--compact-every", "20"]);
    assert!(out.contains("50 commits, 2 compactions"), "{out}");
    assert_eq!(structure(&d), runs);
    assert!(points(&d) == rows, "--commits 50 changed the rows");
    // Version 0 creates the table; each commit and each compaction adds one.
    assert!(metrics_version(&d) >= 52, "{}", metrics_version(&d));
    // 10 ingest files since the last compaction, and what the two compactions wrote.
    let (ok, check, err) = cli(&d, &["check"]);
    assert!(ok, "{err}");
    let files: usize = check
        .lines()
        .find(|l| l.starts_with("metrics "))
        .and_then(|l| l.split(": ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{check}"));
    assert!((11..=14).contains(&files), "{check}");
    assert!(metrics_version(&a) < 50);
}

#[test]
fn bench_data_refuses_bad_input() {
    let (_dir, store) = temp_store();
    for scale in ["0", "-1", "NaN", "inf", "0.0001"] {
        let (ok, _, err) = cli(&store, &["bench-data", "--scale", scale]);
        assert!(!ok, "--scale {scale} accepted");
        assert!(err.contains("--scale"), "{err}");
    }
    let (ok, _, err) = cli(&store, &["bench-data", "--scale", "0.01", "--commits", "0"]);
    assert!(!ok && err.contains("--commits"), "{err}");
    for bad in [
        &["--compact-every", "5"][..],
        &["--commits", "10", "--compact-every", "0"],
    ] {
        let args = [&["bench-data", "--scale", "0.01"][..], bad].concat();
        let (ok, _, err) = cli(&store, &args);
        assert!(!ok && err.contains("--compact-every"), "{bad:?}: {err}");
    }
    // Nothing was written: no store at all (not even its directory, when
    // local), so no `bench` project.
    let written: Vec<String> = list_objects(&store, "").into_keys().collect();
    assert!(written.is_empty(), "{written:?}");
    if is_local(&store) {
        assert!(!std::path::Path::new(&store).exists());
    }

    generate(&store, &[]);
    let (ok, _, err) = cli(&store, &["bench-data", "--scale", SCALE]);
    assert!(
        !ok && err.contains("already has a `bench` project"),
        "{err}"
    );
    assert_eq!(
        sql(&store, "SELECT count(*) AS n FROM runs"),
        format!("n\n{RUNS}\n")
    );
}
