//! Several forkline processes on one store (issue #7): a read-only process
//! never creates a store, file URLs signed by one server work on another,
//! lost commit races are not logged as warnings, and point appends of several
//! handles interleave without losing one, leaving checkpoints behind.

mod common;

use std::time::{Duration, Instant};

use common::{
    cli, forkline_command, is_local, list_objects, object_size, spawn_server_with, temp_store,
    test_s3,
};
use serde_json::{Value, json};

/// Whether nothing at all exists at `store` (no directory, no object under the prefix).
fn nothing_at(store: &str) -> bool {
    list_objects(store, "").is_empty() && !(is_local(store) && std::path::Path::new(store).exists())
}

/// Runs the binary to its end, failing the test if it is still running after a minute
/// (a read-only server that wrongly starts would serve forever).
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let mut child = forkline_command()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn forkline");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "forkline {args:?} still running after 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn read_only_commands_refuse_a_missing_store_and_create_nothing() {
    let (_dir, store) = temp_store();
    let (ok, err) = run_to_exit(&[
        "--store",
        &store,
        "serve",
        "--read-only",
        "--listen",
        "127.0.0.1:0",
        "--flight-listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok, "a read-only server started on a missing store: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("no forkline store at")
            && err.contains("a read-only server does not create one"),
        "{err}"
    );
    assert!(nothing_at(&store), "a read-only server wrote to {store}");

    // The reading commands (and the maintenance ones) do not create a store from a typo either.
    for args in [
        vec!["sql", "SELECT 1"],
        vec!["check"],
        vec!["export", "X-1", "-o", "/dev/null"],
        vec![
            "report",
            "--project",
            "p",
            "--all-families",
            "--metrics",
            "m",
        ],
        vec!["compact"],
        vec!["vacuum"],
    ] {
        let (ok, _, err) = cli(&store, &args);
        assert!(!ok, "{args:?} succeeded on a missing store");
        assert!(
            err.contains("no forkline store at")
                && err.contains(&format!("`forkline {}` does not create one", args[0])),
            "{args:?}: {err}"
        );
        assert!(nothing_at(&store), "{args:?} wrote to {store}");
    }

    // An existing but empty directory is no store either, and stays empty.
    if test_s3().is_none() {
        std::fs::create_dir_all(&store).unwrap();
        let (ok, err) = run_to_exit(&["--store", &store, "serve", "--read-only"]);
        assert!(!ok && err.contains("no Delta tables under it"), "{err}");
        assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);
    }

    // Writing commands still create the store, so a read-only server then starts.
    let (ok, _, err) = cli(
        &store,
        &["run", "create", "--project", "p", "--name", "first"],
    );
    assert!(ok, "{err}");
    let server = spawn_server_with(&store, &["--read-only"]);
    let rows = server
        .post_json(
            "/api/sql",
            &json!({"sql": "SELECT count(*) AS n FROM runs"}),
        )
        .await;
    assert_eq!(rows[0]["n"], 1, "{rows}");
    // Nor does it create the file-URL signing secret (it falls back to a key of its own).
    assert_eq!(
        object_size(&store, "_forkline/file-url-secret"),
        None,
        "a read-only server wrote the file-URL secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_signed_by_one_server_work_on_another() {
    let (_dir, store) = temp_store();
    let (ok, _, err) = cli(&store, &["run", "create", "--project", "p", "--name", "r"]);
    assert!(ok, "{err}");
    // Two writers starting together: both race to create the shared secret.
    let flags = ["--compact-every-s", "0"];
    let (a, b) = {
        let (sa, sb) = (store.clone(), store.clone());
        let a = std::thread::spawn(move || spawn_server_with(&sa, &flags));
        let b = std::thread::spawn(move || spawn_server_with(&sb, &flags));
        (a.join().unwrap(), b.join().unwrap())
    };
    let client = reqwest::Client::new();

    // Presign on A (as the SDK does), upload through B.
    let spec = json!({"files": [{"fileName": "notes.txt", "fileSize": 3, "fileType": "txt",
                                  "time": 1, "logName": "doc", "step": 1}]});
    let reply = client
        .post(format!("{}/files", a.base))
        .header("x-run-id", "1")
        .header("content-type", "application/json")
        .body(spec.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let urls: Value = reply.json().await.unwrap();
    let upload = urls["doc"][0]["notes.txt"].as_str().unwrap();
    assert!(upload.starts_with(&a.base), "{upload}");
    let on_b = upload.replacen(&a.base, &b.base, 1);
    let status = |url: String, put: bool| {
        let client = client.clone();
        async move {
            let req = if put {
                client.put(url).body("abc")
            } else {
                client.get(url)
            };
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    // A tampered signature is refused on B as on A.
    let (sig_at, last) = (on_b.len() - 1, on_b.chars().last().unwrap());
    let tampered = format!("{}{}", &on_b[..sig_at], if last == '0' { '1' } else { '0' });
    assert_eq!(status(tampered, true).await.0, 400);
    let (code, body) = status(on_b, true).await;
    assert_eq!(code, 200, "B refused an upload URL A signed: {body}");

    // A download URL from A's file listing works on B; and a read replica
    // started later signs with the same secret.
    let replica = spawn_server_with(&store, &["--read-only"]);
    for (signer, fetcher) in [(&a, &b), (&replica, &a)] {
        let listing = signer
            .get_json("/api/runs/files?runId=1&projectName=p")
            .await;
        let download = listing["files"][0]["downloadUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("no download URL in {listing}"));
        let download = download.replacen(&signer.base, &fetcher.base, 1);
        assert_eq!(status(download.clone(), false).await, (200, "abc".into()));
        let tampered = download.replace("&sig=", "&sig=00");
        assert_eq!(status(tampered, false).await.0, 400);
    }
}

#[test]
fn lost_commit_races_are_not_logged_as_warnings() {
    let (_dir, store) = temp_store();
    let (ok, _, err) = cli(&store, &["run", "create", "--project", "p", "--name", "r"]);
    assert!(ok, "{err}");
    // Catalog writes of four processes race; the losers retry on the new version.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut logged = String::new();
                for i in 0..5 {
                    let name = format!("w{w}-{i}");
                    let (ok, _, err) = cli(
                        &store,
                        &["run", "create", "--project", "p", "--name", &name],
                    );
                    assert!(ok, "{err}");
                    logged.push_str(&err);
                }
                logged
            })
        })
        .collect();
    let logged: String = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains("deltalake"))
        .collect();
    assert!(warnings.is_empty(), "{}", warnings.join("\n"));
    let (ok, out, err) = cli(
        &store,
        &["sql", "SELECT count(*) AS n FROM runs", "--format", "csv"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().nth(1), Some("21"), "{out}");
}

fn points(from: u64, n: u64) -> Vec<forkline::ingest::MetricPoint> {
    (from..from + n)
        .map(|s| forkline::ingest::MetricPoint {
            metric: "loss".into(),
            step: s,
            value: s as f64 / 2.0,
            time_us: Some(1_700_000_000_000_000 + s as i64),
        })
        .collect()
}

async fn count(engine: &forkline::Engine, sql: &str) -> String {
    common::rows(engine, sql).await.unwrap()[0][0].clone()
}

/// A handle on a fresh store holding one run, and the run's display id.
async fn engine_with_run(store: &str) -> (forkline::Engine, String) {
    let engine = forkline::Engine::open(store).await.unwrap();
    let run = engine
        .create_run(forkline::catalog::NewRun {
            project: "p".into(),
            name: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    (engine, run.display_id.clone())
}

/// Two handles on one store append in turn and at once: a handle whose
/// cached state is behind moves past the versions the other took, each
/// append is one file, each handle reads its own appends at once, and a
/// handle opened afterwards reads every point exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_two_handles_interleave_and_every_point_lands() {
    use forkline::Engine;
    use forkline::store::TableKind;
    let (_dir, store) = temp_store();
    let (a, id) = engine_with_run(&store).await;
    let b = Engine::open(&store).await.unwrap();
    let mut written = 0u64;
    for i in 0..6u64 {
        let engine = if i % 2 == 0 { &a } else { &b };
        engine
            .write_points(&id, points(i * 100, 100))
            .await
            .unwrap();
        written += 100;
        // The writer sees its append without waiting for a refresh interval.
        let n = count(
            engine,
            &format!("SELECT count(*) FROM metrics WHERE step >= {}", i * 100),
        )
        .await;
        assert_eq!(n, "100", "append {i}");
    }
    let (x, y) = tokio::join!(
        a.write_points(&id, points(600, 50)),
        b.write_points(&id, points(650, 50))
    );
    assert_eq!((x.unwrap(), y.unwrap()), (50, 50));
    written += 100;

    let c = Engine::open(&store).await.unwrap();
    c.store().refresh(TableKind::Metrics).await.unwrap();
    let files = c.store().files(TableKind::Metrics).await.unwrap();
    assert_eq!(files.files.len(), 8, "{:?}", files.files);
    assert_eq!(files.version, Some(8), "one version per append");
    let stats: u64 = files.files.iter().map(|f| f.rows.unwrap()).sum();
    assert_eq!(stats, written);
    assert_eq!(
        count(&c, "SELECT count(*) FROM metric_writes").await,
        written.to_string()
    );
    assert_eq!(
        count(&c, "SELECT count(DISTINCT step) FROM metrics").await,
        written.to_string()
    );
    assert_eq!(
        count(&c, "SELECT CAST(sum(value * 2) AS BIGINT) FROM metrics").await,
        (0..written).sum::<u64>().to_string()
    );
}

/// A hundred appends close a checkpoint interval: the checkpoint of version
/// 99 is written (as delta-rs wrote it after its own commits), and a new
/// handle loads the table from it with every point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_write_the_checkpoint_of_each_interval() {
    use forkline::Engine;
    use forkline::store::TableKind;
    use object_store::ObjectStoreExt;
    let (_dir, store) = temp_store();
    let (engine, id) = engine_with_run(&store).await;
    for i in 0..100u64 {
        engine.write_points(&id, points(i * 3, 3)).await.unwrap();
    }
    let location = engine.store().location();
    let checkpoint = location
        .path("metrics/_delta_log/00000000000000000099.checkpoint.parquet")
        .unwrap();
    let head = location.object_store.head(&checkpoint).await;
    assert!(head.is_ok(), "no checkpoint at version 99: {head:?}");

    let fresh = Engine::open(&store).await.unwrap();
    let table = fresh.store().refresh(TableKind::Metrics).await.unwrap();
    assert_eq!(table.version(), Some(100));
    assert_eq!(count(&fresh, "SELECT count(*) FROM metrics").await, "300");
}
