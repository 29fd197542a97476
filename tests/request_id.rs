//! Every request is traceable by one id: the client's `x-request-id` (when
//! sane) or a new one, echoed on the answer over HTTP and Flight SQL,
//! recorded in `system.queries.request_id`, and named on the server's log
//! lines of that request. Runs the real `forkline serve` on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use arrow::array::AsArray;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use common::{forkline_command, temp_store};
use prost::Message;
use serde_json::{Value, json};

/// A server whose standard error is kept, line by line.
struct Serve {
    child: Child,
    http: String,
    flight: String,
    log: Arc<Mutex<Vec<String>>>,
    _store: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Serve {
    let (dir, store) = temp_store();
    let mut child = forkline_command()
        .args(["--store", &store, "serve", "--listen", "127.0.0.1:0"])
        .args(["--flight-listen", "127.0.0.1:0"])
        // The request spans' own events are at DEBUG (answers) and ERROR (failures).
        .env("FORKLINE_LOG", "warn,forkline=info,tower_http=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forkline serve");
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
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
    std::thread::spawn(move || for _ in out.lines() {});
    Serve {
        child,
        http,
        flight,
        log,
        _store: dir,
    }
}

impl Serve {
    /// `POST /api/sql`, with `id` as `x-request-id` when given: the answer's
    /// status, its `x-request-id` and its body.
    async fn sql(&self, sql: &str, id: Option<&str>) -> (u16, Option<String>, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/sql", self.http))
            .header("accept", "application/json")
            .json(&json!({ "sql": sql }));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let echoed = response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string());
        (status, echoed, response.json().await.unwrap())
    }

    /// The `request_id` of every recorded query whose text is `sql`.
    async fn recorded_ids(&self, sql: &str) -> Vec<String> {
        let escaped = sql.replace('\'', "''");
        let (status, _, rows) = self
            .sql(
                &format!("SELECT request_id FROM system.queries WHERE sql = '{escaped}'"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{rows}");
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits (up to 5 s) for a log line holding `id`.
    async fn logged(&self, id: &str) -> Vec<String> {
        for _ in 0..50 {
            let lines: Vec<String> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(id))
                .cloned()
                .collect();
            if !lines.is_empty() {
                return lines;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Vec::new()
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

fn is_made_id(id: &str) -> bool {
    id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test]
async fn an_http_request_id_is_echoed_recorded_and_logged() {
    let server = serve();

    // Sent: echoed, recorded with the query, named on the request's log lines.
    let sql = "SELECT 41 + 1 AS answer";
    let (status, echoed, rows) = server.sql(sql, Some("nb-7f3a/cell:12")).await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows, json!([{ "answer": 42 }]));
    assert_eq!(echoed.as_deref(), Some("nb-7f3a/cell:12"));
    assert_eq!(server.recorded_ids(sql).await, vec!["nb-7f3a/cell:12"]);
    let lines = server.logged("nb-7f3a/cell:12").await;
    assert!(
        lines.iter().any(|l| l.contains("/api/sql")),
        "no log line of the request names its id and route: {lines:?}"
    );

    // Absent: made, and the made one is what the query log holds.
    let sql = "SELECT 2 AS two";
    let (status, echoed, _) = server.sql(sql, None).await;
    assert_eq!(status, 200);
    let made = echoed.expect("a made id is echoed");
    assert!(is_made_id(&made), "{made}");
    assert_eq!(server.recorded_ids(sql).await, vec![made.clone()]);
    assert!(!server.logged(&made).await.is_empty());

    // Not sane (too long, or not printable ASCII): replaced, never echoed back.
    let long = "x".repeat(129);
    for bad in [long.as_str(), "two words", "tab\there"] {
        let (status, echoed, _) = server.sql("SELECT 3 AS three", Some(bad)).await;
        assert_eq!(status, 200);
        let echoed = echoed.unwrap();
        assert!(is_made_id(&echoed), "{bad:?} became {echoed:?}");
    }

    // Every answer carries one: a refused query, an unknown route, a 404.
    let (status, echoed, body) = server.sql("DROP TABLE runs", Some("bad-sql-1")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(echoed.as_deref(), Some("bad-sql-1"));
    let missing = reqwest::Client::new()
        .get(format!("{}/api/runs/details/999", server.http))
        .header("x-request-id", "missing-run")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-request-id"], "missing-run");
    let health = reqwest::get(format!("{}/health", server.http))
        .await
        .unwrap();
    assert!(is_made_id(
        health.headers()["x-request-id"].to_str().unwrap()
    ));
}

#[tokio::test]
async fn a_flight_request_id_is_echoed_recorded_and_logged() {
    let server = serve();
    let mut flight = server.flight().await;
    let sql = "SELECT 6 * 7 AS answer";
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let mut request =
        tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
    request
        .metadata_mut()
        .insert("x-request-id", "flight-call-1".parse().unwrap());
    let info = flight.get_flight_info(request).await.unwrap();
    assert_eq!(
        info.metadata().get("x-request-id").unwrap(),
        "flight-call-1"
    );
    let ticket: Ticket = info.into_inner().endpoint[0].ticket.clone().unwrap();
    let mut request = tonic::Request::new(ticket);
    request
        .metadata_mut()
        .insert("x-request-id", "flight-call-2".parse().unwrap());
    let response = flight.do_get(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "flight-call-2"
    );
    let mut stream = response.into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(message);
    }
    let batches = arrow_flight::utils::flight_data_to_batches(&messages).unwrap();
    let answer = batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!((answer.len(), answer.value(0)), (1, 42));
    // The statement is recorded once, under the call that ran it.
    assert_eq!(server.recorded_ids(sql).await, vec!["flight-call-2"]);
    assert!(!server.logged("flight-call-2").await.is_empty());

    // A failed call carries its id too, made when the client sent none.
    let command = CommandStatementQuery {
        query: "SELECT * FROM no_such_table".into(),
        transaction_id: None,
    };
    let failed = flight
        .get_flight_info(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()))
        .await
        .unwrap_err();
    let id = failed
        .metadata()
        .get("x-request-id")
        .expect("an id on a failure");
    assert!(is_made_id(id.to_str().unwrap()), "{id:?}");
}
