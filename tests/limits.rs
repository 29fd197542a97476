//! A shared server survives what its clients send: deep expressions,
//! oversized results and allocations, queries that never end, too many
//! queries, idle and slow connections. Every case runs against the real
//! `forkline serve` binary on loopback; after each the process is alive and
//! answers /health within 100 ms.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use common::{forkline_command, temp_store};
use forkline::query::admission::limits::{MAX_EXPR_DEPTH, MAX_SQL_BYTES};
use prost::Message;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

/// The cases measure time and CPU of a server process: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `forkline serve` process with its HTTP and Flight SQL addresses, killed on drop.
struct Serve {
    child: Child,
    http: String,
    flight: String,
    _store: tempfile::TempDir,
}

fn serve(extra: &[&str]) -> Serve {
    let (dir, store) = temp_store();
    let mut child = forkline_command()
        .args(["--store", &store, "serve", "--listen", "127.0.0.1:0"])
        .args(["--flight-listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn forkline serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut address = || {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("http://").or(w.strip_prefix("grpc://")))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string()
    };
    let http = format!("http://{}", address());
    let flight = format!("http://{}", address());
    Serve {
        child,
        http,
        flight,
        _store: dir,
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn proc(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id())).unwrap()
    }

    /// The process is running and answers `/health` within 100 ms.
    async fn assert_healthy(&self) {
        let state = self.proc("stat");
        let state = state.rsplit(") ").next().unwrap().chars().next().unwrap();
        assert!(
            state != 'Z' && state != 'X',
            "the server died (state {state})"
        );
        let client = reqwest::Client::new();
        let started = Instant::now();
        let response = client
            .get(format!("{}/health", self.http))
            .send()
            .await
            .expect("the server answers /health");
        let took = started.elapsed();
        assert_eq!(response.status(), 200);
        assert!(took < Duration::from_millis(100), "/health took {took:?}");
    }

    /// Peak resident memory of the server process, in bytes.
    fn peak_rss(&self) -> u64 {
        let status = self.proc("status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb << 10
    }

    /// CPU time the server process has used, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = self.proc("stat");
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Asserts the server spends (almost) no CPU over the next second.
    async fn assert_idle(&self) {
        let before = self.cpu_ticks();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = self.cpu_ticks() - before;
        // Ticks are 10 ms: a cancelled query still running would use ~100.
        assert!(
            used <= 15,
            "the server used {used} ticks of CPU in the second after the cancel"
        );
    }

    /// `POST /api/sql` with `accept`; status, headers and body text.
    async fn sql(&self, sql: &str, accept: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/sql", self.http))
            .header("accept", accept)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    async fn flight(&self) -> FlightServiceClient<tonic::transport::Channel> {
        let channel = tonic::transport::Channel::from_shared(self.flight.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        FlightServiceClient::new(channel)
    }
}

fn error_of(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    value["error"].as_str().unwrap_or_default().to_string()
}

/// `GetFlightInfo` for a statement: plans it.
async fn flight_info(
    client: &mut FlightServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<arrow_flight::FlightInfo, tonic::Status> {
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    Ok(client.get_flight_info(descriptor).await?.into_inner())
}

/// Plans and runs a statement over Flight SQL; the number of rows, or the first failure.
async fn flight_rows(
    client: &mut FlightServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<usize, tonic::Status> {
    let info = flight_info(client, sql).await?;
    let ticket: Ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await?.into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    let batches = arrow_flight::utils::flight_data_to_batches(&messages)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

/// A statement with a chain of `terms` operators, and the answer it gives when run.
fn chain(op: &str, terms: usize) -> (String, String) {
    let join = |term: &str, sep: &str| vec![term; terms].join(sep);
    match op {
        "+" => (
            format!("SELECT {} AS v FROM (VALUES (1)) t(x)", join("x", " + ")),
            terms.to_string(),
        ),
        "OR" => (
            format!(
                "SELECT count(*) AS v FROM (VALUES (1)) t(x) WHERE {}",
                join("x = 1", " OR ")
            ),
            "1".into(),
        ),
        "AND" => (
            format!(
                "SELECT count(*) AS v FROM (VALUES (1)) t(x) WHERE {}",
                join("x = 1", " AND ")
            ),
            "1".into(),
        ),
        "||" => (
            format!(
                "SELECT length({}) AS v FROM (VALUES ('a')) t(s)",
                join("s", " || ")
            ),
            terms.to_string(),
        ),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn deep_expressions_are_refused_and_the_deepest_allowed_run() {
    let _serial = SERIAL.lock().await;
    let server = serve(&[]);
    let mut flight = server.flight().await;
    // Each term adds a level; the comparison and the function call one more.
    let deepest = MAX_EXPR_DEPTH - 2;
    for op in ["+", "OR", "AND", "||"] {
        let (sql, answer) = chain(op, deepest);
        let (status, _, body) = server.sql(&sql, "application/json").await;
        assert_eq!(status, 200, "{op} × {deepest}: {body}");
        let rows: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(rows[0]["v"].to_string(), answer, "{op} × {deepest}");
        assert_eq!(
            flight_rows(&mut flight, &sql).await.unwrap(),
            1,
            "{op} over Flight"
        );
        server.assert_healthy().await;
        for terms in [2_000, 100_000] {
            let (sql, _) = chain(op, terms);
            let (status, _, body) = server.sql(&sql, "application/json").await;
            assert_eq!(status, 400, "{op} × {terms}: {body}");
            assert!(
                error_of(&body).contains("nests expressions more than"),
                "{body}"
            );
            let refused = flight_info(&mut flight, &sql).await.unwrap_err();
            assert_eq!(
                refused.code(),
                Code::InvalidArgument,
                "{op} × {terms}: {refused}"
            );
            server.assert_healthy().await;
        }
    }
    let unions = vec!["SELECT 1"; 1_500].join(" UNION ALL ");
    let (status, _, body) = server.sql(&unions, "application/json").await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("UNION"), "{body}");
    let long = format!("SELECT '{}' AS v", "x".repeat(MAX_SQL_BYTES));
    let (status, _, body) = server.sql(&long, "application/json").await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("KiB of SQL"), "{body}");
    server.assert_healthy().await;
}

#[tokio::test]
async fn export_of_ten_thousand_metric_names() {
    let _serial = SERIAL.lock().await;
    let server = serve(&["--commit-window-ms", "20"]);
    let client = reqwest::Client::new();
    let run: Value = client
        .post(format!("{}/api/runs/create", server.http))
        .json(&json!({"runName": "wide", "projectName": "limits"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = run["runId"].as_u64().unwrap().to_string();
    let points: String = (0..10)
        .map(|step| format!("{{\"time\": 1700000000000, \"step\": {step}, \"data\": {{\"m0\": 1, \"m1\": 2, \"other\": 3}}}}\n"))
        .collect();
    let ingested = client
        .post(format!("{}/ingest/metrics", server.http))
        .header("x-run-id", &run)
        .body(points)
        .send()
        .await
        .unwrap();
    assert_eq!(ingested.status(), 200);
    let names: Vec<String> = (0..10_000).map(|i| format!("m{i}")).collect();
    // Commas as they are: the whole list fits in a URL (64 KiB at most).
    let export = |metrics: String| {
        let client = client.clone();
        let url = format!(
            "{}/api/export?run={run}&format=csv&metrics={metrics}",
            server.http
        );
        async move {
            let response = client.get(url).send().await.expect("GET /api/export");
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, csv) = export(names.join(",")).await;
    assert_eq!(status, 200, "{csv}");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 20, "{csv}");
    assert!(
        rows.iter()
            .all(|r| r.contains(",m0,") || r.contains(",m1,")),
        "{csv}"
    );
    server.assert_healthy().await;
    let patterns: Vec<String> = (0..101).map(|i| format!("m{i}*")).collect();
    let (status, body) = export(patterns.join(",")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_of(&body).contains("at most 100 metric patterns"),
        "{body}"
    );
    server.assert_healthy().await;
}

#[tokio::test]
async fn generated_values_and_text_tables_stay_within_memory() {
    let _serial = SERIAL.lock().await;
    let server = serve(&["--memory-mb", "256"]);
    let repeats = (0..4).map(|_| {
        let server = &server;
        async move {
            server
                .sql(
                    "SELECT length(repeat('ab', 1000000000)) AS n",
                    "application/json",
                )
                .await
        }
    });
    for (status, _, body) in futures::future::join_all(repeats).await {
        assert_eq!(status, 400, "{body}");
        assert!(
            error_of(&body).contains("repeat: the result would take"),
            "{body}"
        );
    }
    server.assert_healthy().await;
    for sql in [
        "SELECT lpad('a', 2000000000) AS v",
        "SELECT range(1, 100000000) AS v",
        "SELECT array_repeat('x', 100000000) AS v",
        "SELECT array_resize([1], 100000000) AS v",
        "SELECT length(replace(repeat('a', 1000000), 'a', repeat('b', 1000))) AS v",
        "SELECT length(regexp_replace(repeat('a', 1000000), 'a', repeat('b', 1000), 'g')) AS v",
        "SELECT generate_series(timestamp '1970-01-01', timestamp '2100-01-01', interval '1 second') AS v",
        "SELECT length(repeat(s, 100000000)) AS v FROM (VALUES ('a'), ('b')) t(s)",
    ] {
        let (status, _, body) = server.sql(sql, "application/json").await;
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(
            error_of(&body).contains("the result would take"),
            "{sql}: {body}"
        );
    }
    // Within the cap the same functions answer.
    let (status, _, body) = server
        .sql(
            "SELECT count(*) AS n, length(repeat('ab', 1000000)) AS r FROM unnest(range(1, 3000000))",
            "application/json",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"[{"n":2999999,"r":2000000}]"#);
    server.assert_healthy().await;

    for sql in [
        "SELECT * FROM generate_series(1, 3000000)",
        "SELECT unnest(range(1, 3000000)) AS v",
    ] {
        let (status, _, body) = server.sql(sql, "text/plain").await;
        assert_eq!(status, 400, "{body}");
        assert!(error_of(&body).contains("at most 10000 rows"), "{body}");
        server.assert_healthy().await;
    }
    let (status, headers, table) = server
        .sql("SELECT * FROM generate_series(1, 3)", "text/plain")
        .await;
    assert_eq!(status, 200, "{table}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        table.contains("| 3 ") && table.ends_with("3 row(s)\n"),
        "{table}"
    );
    // Other formats stream any size.
    let (status, _, csv) = server
        .sql("SELECT * FROM generate_series(1, 3000000)", "text/csv")
        .await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 3_000_001);
    drop(csv);
    server.assert_healthy().await;
    let peak = server.peak_rss();
    eprintln!("server peak RSS: {} MiB", peak >> 20);
    assert!(peak < 1 << 30, "peak RSS {} MiB", peak >> 20);
}

/// A query that runs for hours unless cancelled.
const ENDLESS: &str = "SELECT sum(value % 7) AS s FROM generate_series(1, 1000000000000)";

#[tokio::test]
async fn queries_past_the_timeout_are_cancelled() {
    let _serial = SERIAL.lock().await;
    let server = serve(&["--query-timeout-s", "2"]);
    // Cancelled before the first byte: 504.
    let started = Instant::now();
    let (status, _, body) = server.sql(ENDLESS, "application/json").await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(error_of(&body).contains("query timeout of 2 s"), "{body}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.assert_idle().await;
    server.assert_healthy().await;

    // Cancelled mid-stream, with a client that does not read: the body is cut.
    let response = reqwest::Client::new()
        .post(format!("{}/api/sql", server.http))
        .header("accept", "text/csv")
        .json(&json!({ "sql": "SELECT value FROM generate_series(1, 1000000000000)" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.assert_idle().await;
    let mut response = response;
    let mut read = 0usize;
    let ended = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(
        ended.is_err(),
        "the stream ended cleanly after {read} bytes"
    );
    server.assert_healthy().await;

    // Flight: the stream fails with DEADLINE_EXCEEDED.
    let mut flight = server.flight().await;
    let started = Instant::now();
    let failed = flight_rows(&mut flight, ENDLESS).await.unwrap_err();
    assert_eq!(failed.code(), Code::DeadlineExceeded, "{failed}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.assert_idle().await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn queries_beyond_the_slots_and_queue_are_refused() {
    let _serial = SERIAL.lock().await;
    let server = serve(&[
        "--max-concurrent-queries",
        "1",
        "--query-queue",
        "1",
        "--query-timeout-s",
        "3",
    ]);
    // The one slot: a stream whose client stops reading.
    let stalled = reqwest::Client::new()
        .post(format!("{}/api/sql", server.http))
        .header("accept", "text/csv")
        .json(&json!({ "sql": "SELECT value FROM generate_series(1, 1000000000000)" }))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The one place in the queue.
    let queued = tokio::spawn({
        let http = server.http.clone();
        async move { post_status(&http, ENDLESS).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, headers, body) = server.sql("SELECT 1", "application/json").await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(headers.contains_key("retry-after"));
    assert!(error_of(&body).contains("busy"), "{body}");
    let mut flight = server.flight().await;
    let refused = flight_rows(&mut flight, "SELECT 1").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    server.assert_healthy().await;
    // The stalled stream loses its slot at its deadline, though nobody reads
    // it: the queued query gets the slot, and runs to its own deadline.
    assert_eq!(queued.await.unwrap(), 504);
    let (status, _, body) = server.sql("SELECT 1 AS v", "application/json").await;
    assert_eq!(status, 200, "{body}");
    drop(stalled);
    server.assert_healthy().await;
}

async fn post_status(http: &str, sql: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{http}/api/sql"))
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Whether the server closes `stream` within `within` (it sends nothing first,
/// or, when `answer` is given, a response starting with it).
async fn closed_within(mut stream: TcpStream, within: Duration, answer: Option<&str>) -> bool {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&received);
    read.is_ok() && answer.is_none_or(|a| text.starts_with(a))
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let _serial = SERIAL.lock().await;
    let server = serve(&["--http-header-timeout-s", "2", "--http-body-timeout-s", "2"]);
    let http = server.http.trim_start_matches("http://").to_string();
    let flight = server.flight.trim_start_matches("http://").to_string();
    let opened = Instant::now();
    let mut connections = Vec::new();
    for i in 0..400 {
        let mut stream = TcpStream::connect(&http).await.unwrap();
        if i % 4 == 0 {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: forkline\r\nX-Slow: ")
                .await
                .unwrap();
        }
        connections.push((stream, None));
    }
    for _ in 0..10 {
        let mut stream = TcpStream::connect(&http).await.unwrap();
        stream
            .write_all(
                b"POST /api/sql HTTP/1.1\r\nHost: forkline\r\nContent-Type: application/json\r\n\
                  Content-Length: 1000\r\n\r\n{\"sql\": \"SELECT",
            )
            .await
            .unwrap();
        connections.push((stream, Some("HTTP/1.1 408")));
    }
    for _ in 0..20 {
        connections.push((TcpStream::connect(&flight).await.unwrap(), None));
    }
    // Open connections cost the others nothing.
    server.assert_healthy().await;
    let deadline = Duration::from_secs(5).saturating_sub(opened.elapsed());
    let closed = futures::future::join_all(
        connections
            .into_iter()
            .map(|(stream, answer)| closed_within(stream, deadline, answer)),
    )
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open,
        0,
        "{open} of {} connections still open after 5 s",
        closed.len()
    );
    server.assert_healthy().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let _serial = SERIAL.lock().await;
    let server = serve(&["--max-connections", "4", "--http-header-timeout-s", "2"]);
    let http = server.http.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&http).await.unwrap());
    }
    let started = Instant::now();
    let response = reqwest::get(format!("{}/health", server.http))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 200);
    // It waited for the header timeout to free a slot.
    assert!(
        waited > Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
    drop(idle);
    server.assert_healthy().await;
}
