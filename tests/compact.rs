//! Compaction leaves every query result unchanged: a store that is compacted
//! (fully, then incrementally after more writes) answers exactly as a twin store
//! that received the same writes and was never compacted.

mod common;

use common::{cli, product_docs, rows, temp_store};
use forkline::catalog::NewRun;
use forkline::ingest::MetricPoint;
use forkline::maintenance::compact::{CompactOptions, compact};
use forkline::store::{FileClass, TableKind};
use forkline::{Engine, Result};

/// Points with a fixed time, so twin stores hold identical rows.
fn points(metric: &str, steps: std::ops::RangeInclusive<u64>, value: f64) -> Vec<MetricPoint> {
    steps
        .map(|s| MetricPoint {
            metric: metric.into(),
            step: s,
            value: value + s as f64,
            time_us: Some(1_700_000_000_000_000 + s as i64),
        })
        .collect()
}

/// The same writes, in the same order, on every engine.
async fn write(engines: &[&Engine], run: &str, batch: Vec<MetricPoint>) -> Result<()> {
    for engine in engines {
        engine.write_points(run, batch.clone()).await?;
    }
    Ok(())
}

/// Queries over every table and table function that reads metrics; `time`
/// and `seq` are left out where twin stores differ (the fixture logs "now").
fn queries(a: &str, b: &str, c: &str) -> Vec<String> {
    let mut q = vec![
        "SELECT run_id, metric, step, value FROM metrics ORDER BY 1, 2, 3".to_string(),
        "SELECT run_id, metric, step, value FROM metric_writes ORDER BY 1, 2, 3, 4".into(),
        "SELECT metric, count(*), round(sum(value), 6), min(step), max(step) FROM metrics GROUP BY metric ORDER BY 1".into(),
        format!("SELECT run_id, source_run_id, metric, step, value, inherited FROM family_metrics('{a}') ORDER BY 1, 3, 4"),
        format!("SELECT run_id, step, value FROM family_metrics('{a}', 'loss') WHERE step BETWEEN 45 AND 155 ORDER BY 1, 2"),
        "SELECT run_id, metric, step, value FROM project_metrics('product-docs') ORDER BY 1, 2, 3".into(),
        "SELECT run_id, step, value FROM project_metrics('other', 'sys/%') ORDER BY 1, 2".into(),
    ];
    for run in [a, b, c, "OTH-1"] {
        q.push(format!(
            "SELECT run_id, source_run_id, metric, step, value, inherited FROM stitched_metrics('{run}') ORDER BY metric, step"
        ));
        q.push(format!(
            "SELECT step, value FROM stitched_metrics('{run}', 'loss') WHERE step > 40 ORDER BY step"
        ));
    }
    q
}

async fn answers(engine: &Engine, queries: &[String]) -> Vec<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for q in queries {
        out.push(rows(engine, q).await.unwrap_or_else(|e| panic!("{q}: {e}")));
    }
    out
}

async fn assert_same(compacted: &Engine, twin: &Engine, queries: &[String], when: &str) {
    let (x, y) = (
        answers(compacted, queries).await,
        answers(twin, queries).await,
    );
    for ((q, x), y) in queries.iter().zip(&x).zip(&y) {
        assert!(!y.is_empty() || q.contains("sys/"), "{when}: {q} is empty");
        assert_eq!(x, y, "{when}: {q}");
    }
}

async fn classes(engine: &Engine) -> Vec<(String, FileClass, Option<(i64, i64)>)> {
    let files = engine.store().files(TableKind::Metrics).await.unwrap();
    files
        .files
        .iter()
        .map(|f| (f.relative.clone(), f.class, f.runs))
        .collect()
}

async fn plan(engine: &Engine, sql: &str) -> String {
    let batches = engine.collect(&format!("EXPLAIN {sql}")).await.unwrap();
    common::render(&batches)
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_changes_no_result() {
    let (_d1, s1) = temp_store();
    let (_d2, s2) = temp_store();
    let store = Engine::open(&s1).await.unwrap();
    let twin = Engine::open(&s2).await.unwrap();
    let docs = product_docs(&store).await.unwrap();
    product_docs(&twin).await.unwrap();
    let (a, b, c) = (
        docs.a.display_id.clone(),
        docs.b.display_id.clone(),
        docs.c.display_id.clone(),
    );
    let both = [&store, &twin];
    // Overwrites: the later write of a point wins, the earlier stays in metric_writes.
    write(&both, &a, points("loss", 90..=100, 5000.0))
        .await
        .unwrap();
    write(&both, &b, points("loss", 60..=60, 7000.0))
        .await
        .unwrap();
    write(&both, &b, points("loss", 60..=60, 8000.0))
        .await
        .unwrap();
    // Another project, logged in many small commits, with a system metric.
    for engine in both {
        engine
            .create_run(NewRun {
                project: "other".into(),
                name: "O".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for chunk in 0..10u64 {
        write(
            &both,
            "OTH-1",
            points("loss", chunk * 5..=chunk * 5 + 4, 0.5),
        )
        .await
        .unwrap();
        write(
            &both,
            "OTH-1",
            points("sys/gpu", chunk * 5..=chunk * 5 + 4, 0.1),
        )
        .await
        .unwrap();
    }
    let queries = queries(&a, &b, &c);
    assert_same(&store, &twin, &queries, "before compaction").await;
    let exact = [
        "SELECT * FROM metrics ORDER BY run_id, metric, step".to_string(),
        "SELECT * FROM metric_writes ORDER BY run_id, metric, step, seq".into(),
    ];
    let before_exact = answers(&store, &exact).await;
    let stitched_a = format!("SELECT * FROM stitched_metrics('{a}', 'loss')");
    assert!(plan(&store, &stitched_a).await.contains("AggregateExec"));

    // One file per run, so a later compaction can leave some files alone.
    let options = CompactOptions {
        target_rows: 1,
        min_ingest_files: 1,
        full: false,
    };
    let report = compact(&store, &options).await.unwrap();
    assert!(report.version.is_some(), "{report}");
    assert_eq!(report.superseded, 11 + 2, "{report}");
    let files = classes(&store).await;
    assert!(files.iter().all(|f| f.1 != FileClass::Ingest), "{files:?}");
    let latest: Vec<_> = files.iter().filter(|f| f.1 == FileClass::Latest).collect();
    assert_eq!(latest.len(), 4, "one latest file per run: {files:?}");
    assert_same(&store, &twin, &queries, "after compaction").await;
    assert_eq!(
        answers(&store, &exact).await,
        before_exact,
        "rows, times and write sequence numbers are kept"
    );
    // Runs held only by latest files are read without last-write-wins.
    assert!(!plan(&store, &stitched_a).await.contains("AggregateExec"));
    assert!(
        compact(&store, &options).await.unwrap().version.is_none(),
        "a compacted store has nothing to compact"
    );

    // New writes on top: C overwrites some of its compacted points, A gains steps.
    write(&both, &c, points("loss", 170..=175, 9000.0))
        .await
        .unwrap();
    write(&both, &c, points("acc", 151..=160, 0.25))
        .await
        .unwrap();
    assert_same(&store, &twin, &queries, "compacted files plus new writes").await;
    let report = compact(&store, &options).await.unwrap();
    assert_eq!(report.superseded, 6, "{report}");
    assert_eq!(
        report.files_in, 3,
        "two ingest files and C's latest file: {report}"
    );
    let after = classes(&store).await;
    for kept in latest
        .iter()
        .filter(|f| f.2 != Some((docs.c.id as i64, docs.c.id as i64)))
    {
        assert!(after.contains(kept), "{kept:?} was left alone");
    }
    assert_same(&store, &twin, &queries, "after a second compaction").await;

    // A full rewrite (after a layout change) keeps every answer too.
    let full = CompactOptions {
        full: true,
        ..options
    };
    let report = compact(&store, &full).await.unwrap();
    assert!(report.version.is_some() && report.files_in >= 4, "{report}");
    assert_same(&store, &twin, &queries, "after a full rewrite").await;
}

#[test]
fn cli_compacts_and_then_has_nothing_to_do() {
    let (_dir, store) = temp_store();
    let (ok, _, err) = cli(
        &store,
        &["run", "create", "--project", "vision", "--name", "r"],
    );
    assert!(ok, "{err}");
    let csv = "metric,step,value\nloss,0,1.0\nloss,1,0.5\n";
    let path = std::env::temp_dir().join(format!("forkline-compact-{}.csv", std::process::id()));
    std::fs::write(&path, csv).unwrap();
    for _ in 0..2 {
        let (ok, _, err) = cli(
            &store,
            &["import", "--run", "VIS-1", path.to_str().unwrap()],
        );
        assert!(ok, "{err}");
    }
    let before = cli(
        &store,
        &[
            "sql",
            "SELECT * FROM metrics ORDER BY step",
            "--format",
            "csv",
        ],
    );
    let (ok, out, err) = cli(&store, &["compact"]);
    assert!(
        ok && out.starts_with("compacted 2 files into 2"),
        "{out}{err}"
    );
    let (ok, out, _) = cli(&store, &["compact"]);
    assert!(ok && out.trim() == "nothing to compact", "{out}");
    let after = cli(
        &store,
        &[
            "sql",
            "SELECT * FROM metrics ORDER BY step",
            "--format",
            "csv",
        ],
    );
    assert_eq!(before, after);
    std::fs::remove_file(path).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_log_merges_into_one_file_and_the_catalog_is_unchanged() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let runs = forkline::maintenance::compact::RUNS_FILES + 3;
    for n in 0..runs {
        engine
            .create_run(NewRun {
                project: "many".into(),
                name: format!("r{n}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let tags = forkline::catalog::RunUpdate::AddTags(vec!["kept".into()]);
    engine.update_run("MAN-2", tags).await.unwrap();
    let all = "SELECT id, project, display_id, name, status, config, tags FROM runs ORDER BY id";
    let before = rows(&engine, all).await.unwrap();
    let report = compact(&engine, &CompactOptions::default()).await.unwrap();
    assert!(report.runs_files_merged > runs, "{report}");
    assert_eq!(classes_of(&engine, TableKind::Runs).await, 1);
    // A fresh process sees the same catalog, and numbering goes on after it.
    drop(engine);
    let engine = Engine::open(&store).await.unwrap();
    assert_eq!(rows(&engine, all).await.unwrap(), before);
    let next = engine
        .create_run(NewRun {
            project: "many".into(),
            name: "after".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.display_id, format!("MAN-{}", runs + 1));
}

async fn classes_of(engine: &Engine, kind: TableKind) -> usize {
    engine.store().refresh(kind).await.unwrap();
    engine.store().files(kind).await.unwrap().files.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_compacts_by_itself() {
    let (_dir, store) = temp_store();
    let (ok, _, err) = cli(
        &store,
        &["run", "create", "--project", "vision", "--name", "r"],
    );
    assert!(ok, "{err}");
    let server = common::spawn_server_with(
        &store,
        &["--compact-every-s", "1", "--compact-min-files", "3"],
    );
    let path = std::env::temp_dir().join(format!("forkline-auto-{}.csv", std::process::id()));
    for i in 0..3 {
        std::fs::write(
            &path,
            format!("metric,step,value\nloss,{i},{i}.5\nloss,9,{i}\n"),
        )
        .unwrap();
        let (ok, _, err) = cli(
            &store,
            &["import", "--run", "VIS-1", path.to_str().unwrap()],
        );
        assert!(ok, "{err}");
    }
    std::fs::remove_file(&path).ok();
    let engine = Engine::open(&store).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        engine.store().refresh(TableKind::Metrics).await.unwrap();
        let files = engine.store().files(TableKind::Metrics).await.unwrap();
        if files.files.iter().all(|f| f.class != FileClass::Ingest) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not compacted: {files:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let got = rows(&engine, "SELECT step, value FROM metrics ORDER BY step")
        .await
        .unwrap();
    let want: Vec<Vec<String>> = [("0", "0.5"), ("1", "1.5"), ("2", "2.5"), ("9", "2.0")]
        .iter()
        .map(|(s, v)| vec![s.to_string(), v.to_string()])
        .collect();
    assert_eq!(got, want, "the last import of step 9 wins");
    let writes = rows(&engine, "SELECT count(*) FROM metric_writes")
        .await
        .unwrap();
    assert_eq!(writes, vec![vec!["6".to_string()]]);
    #[cfg(target_os = "linux")]
    assert_eq!(
        compaction_nice(server.child.id()),
        Some(10),
        "background compaction runs on its own thread at a lower priority"
    );
}

/// The nice value of process `pid`'s thread named `compaction`.
#[cfg(target_os = "linux")]
fn compaction_nice(pid: u32) -> Option<i64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() != "compaction" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the `(comm)`; nice is the 19th field of the line.
        let after = stat.rsplit_once(')')?.1;
        return after.split_whitespace().nth(16)?.parse().ok();
    }
    None
}

/// Two processes compacting the same files at once: Delta's own conflict
/// check ignores removals without data change, so without a check of ours both
/// commits land and every compacted row is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compactions_never_duplicate_rows() {
    let (_dir, store) = temp_store();
    let a = Engine::open(&store).await.unwrap();
    let b = Engine::open(&store).await.unwrap();
    let run = a
        .create_run(NewRun {
            project: "race".into(),
            name: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut written = 0;
    for n in 0..40u64 {
        let batch = points("loss", n * 10..=n * 10 + 9, n as f64);
        written += batch.len();
        a.write_points(&run.display_id, batch).await.unwrap();
    }
    let options = CompactOptions {
        min_ingest_files: 1,
        ..Default::default()
    };
    let (ra, rb) = tokio::join!(compact(&a, &options), compact(&b, &options));
    // Either may lose the race (an error) or find nothing left to do; not both may rewrite.
    let committed = [&ra, &rb]
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.version.is_some()))
        .count();
    assert_eq!(committed, 1, "{ra:?} {rb:?}");
    for engine in [&a, &b] {
        engine.store().refresh(TableKind::Metrics).await.unwrap();
        let files = engine.store().files(TableKind::Metrics).await.unwrap();
        let stored: u64 = files.files.iter().map(|f| f.rows.unwrap_or(0)).sum();
        assert_eq!(
            stored, written as u64,
            "rows in the table's files after {ra:?} / {rb:?}"
        );
        let count = rows(engine, "SELECT count(*) FROM metric_writes")
            .await
            .unwrap();
        assert_eq!(count, vec![vec![written.to_string()]]);
    }
}

/// A number as EXPLAIN ANALYZE prints it (`1.95 M`, `60.0 K`, `812`).
fn humanized(text: &str) -> f64 {
    let mut parts = text.split_whitespace();
    let value: f64 = parts.next().unwrap().parse().unwrap();
    match parts.next() {
        Some("K") => value * 1e3,
        Some("M") => value * 1e6,
        _ => value,
    }
}

/// `(total, matched)` of a `name=X total → Y matched` metric of EXPLAIN ANALYZE.
fn pruning(explained: &str, name: &str) -> (f64, f64) {
    let start = explained.find(&format!("{name}=")).unwrap() + name.len() + 1;
    let text = &explained[start..];
    let text = &text[..text.find(" matched").unwrap()];
    let (total, matched) = text.split_once(" total → ").unwrap();
    (humanized(total), humanized(matched))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_scans_of_compacted_files_prune_to_their_segments() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let root = engine
        .create_run(NewRun {
            project: "prune".into(),
            name: "root".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for metric in ["acc", "loss", "lr"] {
        write(
            &[&engine],
            &root.display_id,
            points(metric, 0..=19_999, 1.0),
        )
        .await
        .unwrap();
    }
    let fork = engine
        .fork_run(forkline::catalog::ForkRequest::new(
            root.display_id.clone(),
            15_000,
        ))
        .await
        .unwrap()
        .run;
    write(
        &[&engine],
        &fork.display_id,
        points("loss", 15_001..=15_100, 2.0),
    )
    .await
    .unwrap();
    compact(&engine, &CompactOptions::default()).await.unwrap();

    let sql = format!(
        "SELECT step, value FROM stitched_metrics('{}', 'loss')",
        fork.display_id
    );
    let explained = plan(&engine, &format!("ANALYZE {sql}")).await;
    // 60,100 stored points; the view is 15,001 of the root's plus 100 own.
    assert_eq!(rows(&engine, &sql).await.unwrap().len(), 15_101);
    // The stitching operator emits each view in key order and says so: the
    // sorts these queries ask for are planned away (the property tests in
    // `lineage_props` check that the order is real).
    for ordered in [
        format!(
            "SELECT metric, step, value FROM stitched_metrics('{}') ORDER BY metric, step",
            fork.display_id
        ),
        format!(
            "SELECT run_id, step, value FROM family_metrics('{}', 'loss') ORDER BY run_id, step",
            root.display_id
        ),
    ] {
        let explained = plan(&engine, &ordered).await;
        assert!(explained.contains("StitchExec"), "{explained}");
        assert!(!explained.contains("SortExec"), "{explained}");
    }
    let (total, matched) = pruning(&explained, "page_index_rows_pruned");
    assert!(total >= 60_000.0, "{explained}");
    assert!(
        matched < total / 2.0,
        "the segments' predicate prunes pages: {matched} of {total} rows kept\n{explained}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_pages_start_at_run_and_metric_blocks() {
    use forkline::store::schema::{MAX_PAGE_ROWS, MIN_PAGE_ROWS};
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};

    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    // Blocks longer than a minimum page and shorter than a maximum one: each
    // must start a page of its own, whatever the fixed page size would cut.
    let block = (MIN_PAGE_ROWS + MAX_PAGE_ROWS) / 2;
    assert!(block > MIN_PAGE_ROWS && block < MAX_PAGE_ROWS);
    for name in ["a", "b"] {
        let run = engine
            .create_run(NewRun {
                project: "pages".into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        for metric in ["acc", "loss", "lr"] {
            let batch = points(metric, 0..=(block as u64 - 1), 1.0);
            write(&[&engine], &run.display_id, batch).await.unwrap();
        }
    }
    compact(&engine, &CompactOptions::default()).await.unwrap();
    let files = classes(&engine).await;
    let latest: Vec<&String> = files
        .iter()
        .filter(|(_, class, _)| *class == FileClass::Latest)
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(latest.len(), 1, "{files:?}");
    let bytes = bytes::Bytes::from(common::read_object(
        &store,
        &format!("metrics/{}", latest[0]),
    ));
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&bytes)
        .unwrap();
    let offsets = metadata.offset_index().unwrap();
    for (group, columns) in offsets.iter().enumerate() {
        for (column, index) in columns.iter().enumerate() {
            let starts: Vec<i64> = index
                .page_locations()
                .iter()
                .map(|p| p.first_row_index)
                .collect();
            let blocks: Vec<i64> = (0..6).map(|i| (i * block) as i64).collect();
            assert_eq!(starts, blocks, "row group {group}, column {column}");
        }
    }
}
