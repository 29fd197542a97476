//! A stitched series whose owners' points arrive in many small batches (an
//! owner's block split across batches, from several files) equals the same
//! rows selected from `metrics` by the segments' ranges, before and after
//! compaction.

mod common;

use common::{cli, forkline_command, temp_store};

/// `forkline sql` as CSV, with the engine's batch size set to `batch_size`.
fn sql(store: &str, batch_size: usize, query: &str) -> String {
    let out = forkline_command()
        .env("DATAFUSION_EXECUTION_BATCH_SIZE", batch_size.to_string())
        .args(["--store", store, "sql", "--format", "csv", query])
        .output()
        .expect("run forkline");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{query}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Imports `metric` points of `steps` into `run`, in one file per call.
fn import(dir: &std::path::Path, store: &str, run: &str, steps: std::ops::Range<u64>, salt: f64) {
    let csv = dir.join(format!("{run}-{}-{}.csv", steps.start, steps.end));
    let mut text = String::from("metric,step,value\n");
    for metric in ["acc", "loss", "sys/gpu"] {
        for s in steps.clone() {
            text.push_str(&format!("{metric},{s},{}\n", salt + s as f64 / 8.0));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let (ok, _, err) = cli(store, &["import", "--run", run, csv.to_str().unwrap()]);
    assert!(ok, "{err}");
}

#[test]
fn stitched_series_from_many_batches_equal_the_segments_rows() {
    let (dir, store) = temp_store();
    let (ok, _, err) = cli(&store, &["run", "create", "--project", "sb", "--name", "a"]);
    assert!(ok, "{err}");
    for part in [0..12, 12..25, 25..30] {
        import(dir.path(), &store, "SB-1", part, 1.0);
    }
    let (ok, _, err) = cli(&store, &["run", "fork", "SB-1", "--step", "17"]);
    assert!(ok, "{err}");
    for part in [18..23, 23..41] {
        import(dir.path(), &store, "SB-2", part, 2.0);
    }
    let (ok, _, err) = cli(&store, &["run", "fork", "SB-2", "--step", "25"]);
    assert!(ok, "{err}");
    import(dir.path(), &store, "SB-3", 26..34, 3.0);

    let stitched = "SELECT metric, step, value, source_run_id FROM stitched_metrics('SB-3') \
                    ORDER BY metric, step";
    let one_metric = "SELECT step, value FROM stitched_metrics('SB-3', 'loss') \
                      WHERE step BETWEEN 10 AND 30 ORDER BY step";
    // System metrics are never inherited: only SB-3's own.
    let segments = "SELECT metric, step, value, run_id AS source_run_id FROM metrics \
                    WHERE (run_id = 1 AND step <= 17 AND metric NOT LIKE 'sys/%') \
                    OR (run_id = 2 AND step BETWEEN 18 AND 25 AND metric NOT LIKE 'sys/%') \
                    OR (run_id = 3 AND step >= 26) ORDER BY metric, step";
    let segments_loss = "SELECT step, value FROM metrics WHERE metric = 'loss' \
                         AND ((run_id = 1 AND step BETWEEN 10 AND 17) \
                         OR (run_id = 2 AND step BETWEEN 18 AND 25) \
                         OR (run_id = 3 AND step BETWEEN 26 AND 30)) ORDER BY step";
    for compacted in [false, true] {
        if compacted {
            let (ok, _, err) = cli(&store, &["compact"]);
            assert!(ok, "{err}");
        }
        let expected = sql(&store, 8192, segments);
        assert_eq!(expected.lines().count(), 1 + 2 * 34 + 8, "{expected}");
        let expected_loss = sql(&store, 8192, segments_loss);
        let own_system = sql(
            &store,
            8192,
            "SELECT step, value FROM metrics WHERE run_id = 3 AND metric = 'sys/gpu' ORDER BY step",
        );
        assert_eq!(own_system.lines().count(), 1 + 8, "{own_system}");
        for batch_size in [1, 3, 7, 8192] {
            assert_eq!(
                sql(&store, batch_size, stitched),
                expected,
                "batch size {batch_size}, compacted {compacted}"
            );
            assert_eq!(
                sql(&store, batch_size, one_metric),
                expected_loss,
                "batch size {batch_size}, compacted {compacted}"
            );
            assert_eq!(
                sql(
                    &store,
                    batch_size,
                    "SELECT step, value FROM stitched_metrics('SB-3', 'sys/gpu') ORDER BY step"
                ),
                own_system,
                "batch size {batch_size}, compacted {compacted}"
            );
        }
    }
}
