//! A real cluster: `forkline scheduler` and two `forkline executor`
//! processes on loopback ports, over the tests' store (a local directory, or
//! a bucket on the loopback S3 server in the S3 pass). This test process
//! plans, as `forkline serve --cluster` does, and every documented query
//! gives the rows it gives when run here.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_same, forkline_command, product_docs, render, temp_store};
use datafusion::physical_plan::displayable;
use forkline::cluster::remote::{self, Remote};
use forkline::fixtures::bench_data::{self, BenchSpec};
use forkline::{Engine, EngineOptions, ErrorKind};

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scheduler on a free port for plans over `store`; its `df://` address.
fn scheduler(store: &str) -> (Process, String) {
    scheduler_logging_to(store, None)
}

/// [`scheduler`], its log (standard error) written to `log` when given.
fn scheduler_logging_to(store: &str, log: Option<&Path>) -> (Process, String) {
    let mut command = forkline_command();
    command
        .args(["--store", store])
        .args([
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--executor-timeout-s",
            "6",
        ])
        .stdout(Stdio::piped());
    if let Some(log) = log {
        command.stderr(std::fs::File::create(log).unwrap());
    }
    let mut child = command.spawn().expect("spawn forkline scheduler");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split_whitespace()
        .find(|w| w.starts_with("df://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (Process(child), address)
}

/// An executor of `slots` slots registered with `cluster`, its task output
/// under `work`; returns once its ports answer.
fn executor(store: &str, cluster: &str, slots: u32, work: &Path, extra: &[&str]) -> Process {
    executor_with_log(store, cluster, slots, work, extra, None)
}

/// [`executor`], logging with the `FORKLINE_LOG` filter `filter` when given.
/// Its log is `work` with the extension `log`.
fn executor_with_log(
    store: &str,
    cluster: &str,
    slots: u32,
    work: &Path,
    extra: &[&str],
    filter: Option<&str>,
) -> Process {
    let flight = free_port();
    std::fs::create_dir_all(work).unwrap();
    // Its log beside its work directory (Ballista logs every retry).
    let log = std::fs::File::create(work.with_extension("log")).unwrap();
    let mut command = forkline_command();
    if let Some(filter) = filter {
        command.env("FORKLINE_LOG", filter);
    }
    let child = command
        .args(["--store", store])
        .args(extra)
        .args(["executor", "--scheduler", cluster])
        .args(["--listen", &format!("127.0.0.1:{flight}")])
        .args(["--slots", &slots.to_string()])
        .arg("--work-dir")
        .arg(work)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn forkline executor");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", flight)).is_err() {
        assert!(
            Instant::now() < deadline,
            "executor port {flight} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Process(child)
}

/// Files an executor wrote under its work directory (its tasks' output).
fn files_under(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                count += 1;
            }
        }
    }
    count
}

async fn on_cluster(store: &str, cluster: &str) -> Engine {
    let options = EngineOptions {
        runner: Arc::new(Remote::new(cluster).unwrap()),
        ..Default::default()
    };
    Engine::open_with(store, options).await.unwrap()
}

fn sorted(batches: &[arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = render(batches);
    rows.sort();
    rows
}

/// The queries of `queries/` and `benches/queries/` with their placeholders
/// filled for the bench project of this store, and the product-docs example.
async fn documented_queries(engine: &Engine, docs_run: &str) -> Vec<(String, String)> {
    let scalar = |rows: Vec<Vec<String>>| rows[0][0].clone();
    let first = |sql: &str| {
        let sql = sql.to_string();
        async move { scalar(common::rows(engine, &sql).await.unwrap()) }
    };
    let deep = first(
        "SELECT display_id FROM runs WHERE project = 'bench' AND parent_id IS NOT NULL \
         ORDER BY id DESC LIMIT 1",
    )
    .await;
    let family = first(
        "SELECT display_id FROM runs WHERE project = 'bench' AND parent_id IS NULL \
         ORDER BY id LIMIT 1",
    )
    .await;
    // Q7's window: 300 steps across the deep run's last fork boundary.
    let seam: u64 = first(&format!("SELECT max(from_step) FROM lineage('{deep}')"))
        .await
        .parse()
        .unwrap();
    let lo = seam.saturating_sub(150);
    let mut queries = vec![(
        "product docs".to_string(),
        format!(
            "SELECT run_id, step, value, source_run_id, inherited \
             FROM stitched_metrics('{docs_run}', 'loss')"
        ),
    )];
    // A union whose inputs differ only in nullability: DataFusion's wire
    // format cannot carry it node for node, so it runs in the planning
    // process, with the same rows.
    queries.push((
        "nullability union".to_string(),
        "SELECT metric, value FROM metrics WHERE step = 3 \
         UNION ALL SELECT 'none', CAST(NULL AS DOUBLE)"
            .to_string(),
    ));
    for dir in ["queries", "benches/queries"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        for file in files {
            let sql = std::fs::read_to_string(&file)
                .unwrap()
                .replace("{run}", &deep)
                .replace("{family}", &family)
                .replace("{metric}", "train/loss")
                .replace("{width}", "100")
                .replace("{step}", "2000")
                .replace("{lo}", &lo.to_string())
                .replace("{hi}", &(lo + 299).to_string());
            queries.push((file.display().to_string(), sql));
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_of_separate_processes_answers_every_documented_query_as_forkline_does() {
    let (dir, store) = temp_store();
    let local = Engine::open(&store).await.unwrap();
    let docs = product_docs(&local).await.unwrap();
    forkline::fixtures::demo::build(&local, 7).await.unwrap();
    bench_data::run(
        &local,
        &BenchSpec {
            scale: 0.01,
            seed: 3,
            commits: None,
            compact_every: None,
        },
    )
    .await
    .unwrap();

    let (_scheduler, cluster) = scheduler(&store);
    let work: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("executor-{i}")))
        .collect();
    let _executors: Vec<Process> = work
        .iter()
        .map(|w| executor(&store, &cluster, 2, w, &[]))
        .collect();
    let remote = on_cluster(&store, &cluster).await;

    let queries = documented_queries(&local, &docs.c.display_id).await;
    assert!(queries.len() >= 16, "{} queries", queries.len());
    let mut stitched = 0;
    for (name, sql) in &queries {
        let expected = sorted(&local.collect(sql).await.unwrap());
        assert!(!expected.is_empty(), "{name}: no rows");
        let started = Instant::now();
        let got = remote
            .collect(sql)
            .await
            .unwrap_or_else(|e| panic!("{name} on the cluster: {e}"));
        eprintln!(
            "{name}: {} rows on the cluster in {:?}",
            expected.len(),
            started.elapsed()
        );
        assert_same(&sorted(&got), &expected, name);
        let (_, plan) = remote::physical_plan(remote.sql(sql).await.unwrap())
            .await
            .unwrap();
        stitched += usize::from(
            displayable(plan.as_ref())
                .indent(true)
                .to_string()
                .contains("StitchExec"),
        );
    }
    assert!(stitched >= 8, "{stitched} of the submitted plans stitched");
    // Each executor wrote task output: both ran tasks.
    for w in &work {
        assert!(files_under(w) > 0, "{} ran no task", w.display());
    }

    // The CLI's `sql --cluster` prints what `sql` prints.
    let sql = format!(
        "SELECT run_id, step, value, inherited FROM stitched_metrics('{}', 'loss') ORDER BY step",
        docs.c.display_id
    );
    let stdout = |args: &[&str]| {
        let (ok, out, err) = common::cli(&store, args);
        assert!(ok, "forkline {args:?}: {err}");
        out
    };
    let here = stdout(&["sql", "--format", "csv", &sql]);
    assert!(here.lines().count() > 100, "{here}");
    let there = stdout(&["sql", "--format", "csv", "--cluster", &cluster, &sql]);
    assert_eq!(there, here);

    // A report's scans run on the cluster: the same numbers (JSON carries
    // every one of them).
    let report = [
        "report",
        "--project",
        "bench",
        "--all-families",
        "--format",
        "json",
    ];
    let metrics = ["--metrics", "train/*,val/loss"];
    let here = stdout(&[&report[..], &metrics].concat());
    assert!(here.contains("train/loss"), "{here}");
    let there = stdout(&[&report[..], &metrics, &["--cluster", &cluster]].concat());
    assert_eq!(there, here);

    served_on_the_cluster(&store, &cluster, &work, &sql).await;
}

/// `POST /api/sql` to `server` with `key`, answered as CSV: (status, body).
async fn sql_over_http(server: &common::Server, key: &str, sql: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/sql", server.base))
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "text/csv")
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// `forkline serve --cluster`: HTTP queries are planned and scoped to the
/// key's projects in the server, then run on the executors; a key of one
/// project reaches nothing of another there either.
async fn served_on_the_cluster(store: &str, cluster: &str, work: &[PathBuf], stitched: &str) {
    let docs_key = common::create_key(store, &["--project", "product-docs"]);
    let bench_key = common::create_key(store, &["--project", "bench"]);
    let server = common::spawn_server_with(store, &["--cluster", cluster]);
    let jobs_before = jobs_under(work);

    let (ok, here, err) = common::cli(store, &["sql", "--format", "csv", stitched]);
    assert!(ok, "{err}");
    let (status, there) = sql_over_http(&server, &docs_key, stitched).await;
    assert_eq!(status, 200, "{there}");
    assert_eq!(there, here);
    let count = "SELECT count(*) AS n FROM metrics";
    let (ok, bench_points, err) = common::cli(
        store,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM metrics m JOIN runs r ON m.run_id = r.id WHERE r.project = 'bench'",
        ],
    );
    assert!(ok, "{err}");
    let (status, there) = sql_over_http(&server, &bench_key, count).await;
    assert_eq!(status, 200, "{there}");
    assert_eq!(
        there, bench_points,
        "the bench key counts only its project's points"
    );

    // Another project's run, by its display id, is not found for this key.
    let (status, there) = sql_over_http(&server, &bench_key, stitched).await;
    assert!((400..500).contains(&status), "{status}: {there}");
    assert!(
        !there.contains("2151"),
        "another project's value leaked: {there}"
    );
    let (status, there) = sql_over_http(
        &server,
        &bench_key,
        "SELECT count(*) AS n FROM runs WHERE project = 'product-docs'",
    )
    .await;
    assert_eq!((status, there.trim()), (200, "n\n0"));

    // Limits hold before anything reaches the cluster: an expression nested
    // past the planner's depth is refused, a body past --max-body-mb is
    // refused unread, and the server still answers.
    let nested = format!(
        "SELECT count(*) AS n FROM (VALUES (1)) t(x) WHERE {}",
        vec!["x = 1"; 2_000].join(" OR ")
    );
    let (status, there) = sql_over_http(&server, &docs_key, &nested).await;
    assert_eq!(status, 400, "{there}");
    assert!(there.contains("nests expressions more than"), "{there}");
    let huge = format!("SELECT '{}' AS s", "x".repeat(40 << 20));
    let (status, there) = sql_over_http(&server, &docs_key, &huge).await;
    assert_eq!(status, 400, "{}", &there[..there.len().min(300)]);
    assert!(there.contains("length limit exceeded"), "{there}");
    let (status, there) = sql_over_http(&server, &docs_key, stitched).await;
    assert_eq!((status, there), (200, here), "after the refused requests");

    let jobs_after = jobs_under(work);
    assert!(
        jobs_after.difference(&jobs_before).count() >= 3,
        "the served queries ran no job on the executors ({jobs_before:?} before, {jobs_after:?} after)"
    );
}

/// The jobs whose output executors hold: each job's tasks write under
/// `work/<job id>/` (removed only minutes after the job ends).
fn jobs_under(work: &[PathBuf]) -> std::collections::BTreeSet<String> {
    work.iter()
        .flat_map(|w| std::fs::read_dir(w).into_iter().flatten().flatten())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_is_down_is_a_clear_error_within_ten_seconds() {
    let (_dir, store) = temp_store();
    let local = Engine::open(&store).await.unwrap();
    let docs = product_docs(&local).await.unwrap();
    let nobody = format!("df://127.0.0.1:{}", free_port());
    let remote = on_cluster(&store, &nobody).await;
    let started = Instant::now();
    let sql = format!("SELECT * FROM stitched_metrics('{}')", docs.c.display_id);
    let e = remote.collect(&sql).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains(&nobody), "{e}");

    // From the command line: the same error, and a non-zero exit.
    let out = forkline_command()
        .args(["--store", &store, "sql", "--cluster", &nobody, "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be reached"), "{stderr}");
}

/// A store holding a bench project of `scale`, and an engine on it.
async fn bench_store(scale: f64) -> (tempfile::TempDir, String, Engine) {
    let (dir, store) = temp_store();
    let local = Engine::open(&store).await.unwrap();
    let spec = BenchSpec {
        scale,
        seed: 5,
        commits: None,
        compact_every: None,
    };
    bench_data::run(&local, &spec).await.unwrap();
    (dir, store, local)
}

/// The `FORKLINE_LOG` filter under which an executor logs its id and each
/// task it receives and finishes (Ballista's INFO lines).
const TASK_LOG: &str = "warn,forkline=info,ballista_executor::execution_loop=info,ballista_executor::executor_process=info";

/// From an executor's log under [`TASK_LOG`]: its id, and the tasks it had
/// received and not finished when the log ends (`TID job/stage.attempt/task.attempt`).
fn unfinished_tasks(log: &Path) -> (Option<String>, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let after = |line: &str, marker: &str| {
        line.find(marker)
            .map(|at| line[at + marker.len()..].trim().to_string())
    };
    let id = text.lines().find_map(|l| after(l, "Executor id: "));
    let task = |line: &str, marker: &str| {
        after(line, marker).and_then(|rest| rest.split(']').next().map(str::to_string))
    };
    let finished: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| task(l, "Finished task : ["))
        .collect();
    let unfinished = text
        .lines()
        .filter_map(|l| task(l, "Received task: ["))
        .filter(|t| !finished.contains(t))
        .collect();
    (id, unfinished)
}

/// An executor killed while a query runs, in the middle of a task of it (its
/// own log says so): the scheduler notices it is gone
/// (`--executor-timeout-s`), resets its tasks and runs them on the other
/// executor, so the query still gives its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_outlives_an_executor_killed_in_its_middle() {
    let (dir, store, local) = bench_store(0.02).await;
    let scheduler_log = dir.path().join("scheduler.log");
    let (_scheduler, cluster) = scheduler_logging_to(&store, Some(&scheduler_log));
    let survivor = executor(&store, &cluster, 1, &dir.path().join("survivor"), &[]);
    let victim_work = dir.path().join("victim");
    let mut victim = executor_with_log(&store, &cluster, 1, &victim_work, &[], Some(TASK_LOG));
    let victim_log = victim_work.with_extension("log");
    let remote = Arc::new(on_cluster(&store, &cluster).await);
    // Many small tasks (one per file group), each heavy enough to outlast the kill.
    let sql = "SELECT run_id, metric, count(*) AS n, sum(value) AS s, min(value), max(value), \
               count(DISTINCT value) FROM metrics GROUP BY run_id, metric";
    let expected = sorted(&local.collect(sql).await.unwrap());
    let started = Instant::now();
    let running = {
        let remote = remote.clone();
        tokio::spawn(async move { remote.collect(sql).await })
    };
    // Killed as soon as its log shows a task it has not finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    while unfinished_tasks(&victim_log).1.is_empty() {
        assert!(
            !running.is_finished() && Instant::now() < deadline,
            "the victim ran no task of the query: {}",
            std::fs::read_to_string(&victim_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    // What its log holds now is all it did: a task it received and never finished.
    let (victim_id, held) = unfinished_tasks(&victim_log);
    assert!(
        !held.is_empty(),
        "the victim held no task when it was killed"
    );
    let victim_id = victim_id.expect("the victim's log names its executor id");
    eprintln!("killed executor {victim_id} in the middle of {held:?}");
    let got = tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .expect("the query neither finished nor failed within 120 s")
        .unwrap()
        .unwrap_or_else(|e| panic!("the query failed after an executor was killed: {e}"));
    eprintln!("finished in {:?} after the kill", started.elapsed());
    assert_same(&sorted(&got), &expected, "after the kill");
    // The scheduler, for its part, reset the lost executor's tasks of a
    // running stage (Ballista's WARN line) to run them again.
    let scheduler_said = std::fs::read_to_string(&scheduler_log).unwrap();
    assert!(
        scheduler_said.lines().any(|l| l.contains("Reset ")
            && l.contains("tasks for running job/stage")
            && l.contains(&format!("on lost Executor {victim_id}"))),
        "the scheduler reset no running task of {victim_id}: {scheduler_said}"
    );
    // The cluster goes on with the survivor.
    let again = remote.collect(sql).await.unwrap();
    assert_same(&sorted(&again), &expected, "on the survivor");
    drop(survivor);
}

/// A query whose state exceeds the executors' memory pool fails with the
/// pool's error, named as such, instead of growing the executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_larger_than_the_executors_memory_is_a_clear_error() {
    let (dir, store, local) = bench_store(0.02).await;
    let (_scheduler, cluster) = scheduler(&store);
    let _executor = executor(
        &store,
        &cluster,
        1,
        &dir.path().join("small"),
        &["--memory-mb", "16"],
    );
    let remote = on_cluster(&store, &cluster).await;
    // Every value of every run in one list per run: nothing to spill.
    let sql = "SELECT run_id, array_agg(value ORDER BY step) FROM metrics GROUP BY run_id";
    let started = Instant::now();
    let e = remote.collect(sql).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::ResourcesExhausted, "{e}");
    let text = e.to_string();
    assert!(text.contains("--memory-mb"), "{text}");
    // A query within the pool still runs on it.
    let small = "SELECT count(*) FROM metrics";
    assert_eq!(
        sorted(&remote.collect(small).await.unwrap()),
        sorted(&local.collect(small).await.unwrap())
    );
}

/// A second executor on a host whose Flight port is taken (here by this
/// test, on the default `--listen` address) stops at once with the address
/// in its error and a non-zero exit, before it registers anywhere.
#[tokio::test]
async fn an_executor_whose_flight_port_is_taken_exits_non_zero_naming_it() {
    let (_dir, store) = temp_store();
    Engine::open(&store).await.unwrap();
    let (_scheduler, cluster) = scheduler(&store);
    let default = "127.0.0.1:50051";
    // Taken by this listener, or by whatever holds it already.
    let _taken = std::net::TcpListener::bind(default);
    assert!(
        std::net::TcpListener::bind(default).is_err(),
        "{default} is free"
    );
    // Ballista's INFO lines would show the executor registering.
    let mut child = forkline_command()
        .env("FORKLINE_LOG", "warn,ballista_executor=info")
        .args(["--store", &store, "executor", "--scheduler", &cluster])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forkline executor");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the executor still runs after 30 s on a taken port");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "exit {status}: {stderr}");
    assert!(
        stderr.contains(&format!("Flight port {default} (--listen) cannot be bound")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Starting poll work loop"),
        "it registered first: {stderr}"
    );
}
