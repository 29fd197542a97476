//! An acknowledged write is on stable storage, proven below the process: a
//! real `forkline serve` on a local store runs under `strace`, and
//!
//! - one run creation and one ingest request are each answered only after
//!   the files they wrote (the data file, the log entry) and the directory
//!   that names them were synced;
//! - with every `fsync` failing (injected by strace), the ingest request is
//!   refused and nothing of it is committed.
//!
//! A kill -9 test cannot see a missing fsync (the page cache survives the
//! process). Skipped where `strace` is missing, except in CI (`.ci/run`
//! installs it).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{spawn_server, temp_store};
use serde_json::{Value, json};

fn strace() -> Option<&'static str> {
    let found = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("strace");
    }
    assert!(
        std::env::var("CI").is_err(),
        "strace is missing; .ci/run installs it"
    );
    eprintln!("skipped: no strace on this machine");
    None
}

/// A `forkline serve` under strace. Dropping it kills the server (strace
/// would leave it running if killed itself) and waits for strace to finish
/// its trace.
struct Traced {
    strace: Child,
    /// The server's pid, until it is killed.
    server: Option<u32>,
}

impl Traced {
    fn stop(&mut self) {
        if let Some(pid) = self.server.take() {
            // SAFETY: kill(2) of the server strace started for this test.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = self.strace.wait();
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first child of process `pid` (the program strace started).
fn child_of(pid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{pid}/children");
    for _ in 0..200 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(child) = text.split_whitespace().next() {
            return child.parse().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("strace started no server");
}

/// `forkline serve` on `store` under strace (`trace` options), writing its
/// trace to `log`; its HTTP base URL once it listens.
fn traced_server(store: &str, log: &Path, trace: &[&str]) -> (Traced, String) {
    let mut child = Command::new("strace")
        .args(["-f", "-y", "-ttt", "-s", "64", "-o"])
        .arg(log)
        .args(trace)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_forkline"))
        .args(["--store", store, "serve", "--listen", "127.0.0.1:0"])
        .args(["--flight-listen", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn strace");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    std::thread::spawn(move || for _ in out.lines() {});
    let server = child_of(child.id());
    (
        Traced {
            strace: child,
            server: Some(server),
        },
        base,
    )
}

async fn post(base: &str, path: &str, headers: &[(&str, &str)], body: String) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text })),
    )
}

async fn ingest(base: &str, run: &str, step: u64) -> (u16, Value) {
    let line =
        format!("{{\"time\": 1700000000000, \"step\": {step}, \"data\": {{\"loss\": 0.5}}}}\n");
    post(
        base,
        "/ingest/metrics",
        &[
            ("x-run-id", run),
            ("x-project-name", "durable"),
            ("content-type", "application/x-ndjson"),
        ],
        line,
    )
    .await
}

/// The trace with every call strace split in two because another thread's
/// call came between (`… <unfinished ...>`, then `<... call resumed> …`)
/// joined into one line, placed where the call returned. Unjoined, a read of
/// the request or an fsync could show without its data or its result (seen
/// under load: "no read of `POST /api/runs/create` in the trace").
fn joined(trace: &str) -> Vec<String> {
    let mut open = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in trace.lines() {
        let pid = line.split_whitespace().next().unwrap_or_default();
        if let Some(head) = line.strip_suffix(" <unfinished ...>") {
            open.insert(pid, head);
        } else if let Some(at) = line.find("<... ")
            && let Some(end) = line[at..].find(" resumed>")
            && let Some(head) = open.remove(pid)
        {
            out.push(format!("{head}{}", &line[at + end + " resumed>".len()..]));
        } else {
            out.push(line.to_string());
        }
    }
    out
}

/// The trace's lines from the one that reads a request starting `request`
/// to the one that writes its answer (`HTTP/1.1 …`).
fn request_span(trace: &str, request: &str) -> Vec<String> {
    let lines = joined(trace);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let start = lines
        .iter()
        .position(|l| l.contains(&format!("\"{request}")) && is_io(l, &["read", "recvfrom"]))
        .unwrap_or_else(|| panic!("no read of `{request}` in the trace"));
    let end = start
        + lines[start..]
            .iter()
            .position(|l| {
                l.contains("\"HTTP/1.1 ") && is_io(l, &["write", "writev", "sendto", "sendmsg"])
            })
            .unwrap_or_else(|| panic!("no answer to `{request}` in the trace"));
    lines[start..=end].iter().map(|l| l.to_string()).collect()
}

/// Whether a trace line is one of `calls` (after the pid and time stamp).
fn is_io(line: &str, calls: &[&str]) -> bool {
    line.split_whitespace()
        .nth(2)
        .is_some_and(|call| calls.iter().any(|c| call.starts_with(&format!("{c}("))))
}

/// The paths of the files and directories `fsync`ed (successfully) in `span`.
fn synced(span: &[String]) -> Vec<String> {
    span.iter()
        .filter(|l| is_io(l, &["fsync", "fdatasync"]) && l.trim_end().ends_with("= 0"))
        .filter_map(|l| {
            let start = l.find('<')? + 1;
            let end = start + l[start..].find('>')?;
            Some(l[start..end].to_string())
        })
        .collect()
}

#[tokio::test]
async fn creations_and_ingest_are_synced_before_they_are_answered() {
    if strace().is_none() {
        return;
    }
    let (dir, store) = temp_store();
    let trace = dir.path().join("trace.txt");
    let (mut server, base) = traced_server(
        &store,
        &trace,
        &[
            "-e",
            "trace=fsync,fdatasync,read,recvfrom,write,writev,sendto,sendmsg",
        ],
    );
    let (status, run) = post(
        &base,
        "/api/runs/create",
        &[("content-type", "application/json")],
        json!({"runName": "r", "projectName": "durable"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    let id = run["runId"].as_u64().unwrap().to_string();
    let (status, body) = ingest(&base, &id, 0).await;
    assert_eq!(status, 200, "{body}");
    server.stop();
    let text = std::fs::read_to_string(&trace).unwrap();
    let root = std::fs::canonicalize(store.trim_start_matches("file://"))
        .unwrap()
        .to_string_lossy()
        .into_owned();

    for (request, table, data_file) in [
        ("POST /api/runs/create", "runs", "runs/part-"),
        ("POST /ingest/metrics", "metrics", "metrics/part-"),
    ] {
        let span = request_span(&text, request);
        let synced = synced(&span);
        let has = |what: &dyn Fn(&str) -> bool| synced.iter().any(|p| what(p));
        let log_dir = format!("{root}/{table}/_delta_log");
        assert!(
            has(&|p| p.starts_with(&format!("{root}/{data_file}"))),
            "{request}: its data file was not synced before the answer: {synced:#?}"
        );
        assert!(
            has(&|p| p.starts_with(&format!("{log_dir}/")) && p.contains(".json")),
            "{request}: its log entry was not synced before the answer: {synced:#?}"
        );
        assert!(
            has(&|p| p == log_dir),
            "{request}: the log directory was not synced before the answer: {synced:#?}"
        );
        assert!(
            has(&|p| p == format!("{root}/{table}")),
            "{request}: the data file's directory was not synced before the answer: {synced:#?}"
        );
    }
}

#[tokio::test]
async fn a_failed_fsync_refuses_the_ingest_and_commits_nothing() {
    if strace().is_none() {
        return;
    }
    let (dir, store) = temp_store();
    // The store and the run exist first, written by an untroubled server.
    let id = {
        let server = spawn_server(&store);
        let (status, run) = post(
            &server.base,
            "/api/runs/create",
            &[("content-type", "application/json")],
            json!({"runName": "r", "projectName": "durable"}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{run}");
        run["runId"].as_u64().unwrap().to_string()
    };
    let versions = common::commit_versions(&store, "metrics");
    let trace = dir.path().join("trace.txt");
    let (mut server, base) = traced_server(
        &store,
        &trace,
        &[
            "-e",
            "trace=fsync,fdatasync",
            "-e",
            "inject=fsync,fdatasync:error=EIO",
        ],
    );
    let (status, body) = ingest(&base, &id, 7).await;
    server.stop();
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("points were not committed") && error.contains("sync"),
        "{body}"
    );
    // Nothing of the refused request is named in the table.
    assert_eq!(common::commit_versions(&store, "metrics"), versions);
    let server = spawn_server(&store);
    let (status, rows) = post(
        &server.base,
        "/api/sql",
        &[("content-type", "application/json")],
        json!({"sql": format!("SELECT count(*) AS n FROM metrics WHERE run_id = {id}")})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows[0]["n"], 0, "{rows}");
}
