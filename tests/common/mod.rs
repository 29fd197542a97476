//! Fixtures shared by the integration tests: real stores, real Delta tables.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use forkline::catalog::{ForkRequest, NewRun};
use forkline::ingest::MetricPoint;
use forkline::store::StoreLocation;
use forkline::{Engine, Result};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde_json::json;

/// Ids of the product-docs lineage: A → B (fork at 50) → C (fork at 150).
pub struct ProductDocs {
    pub a: Arc<forkline::catalog::Run>,
    pub b: Arc<forkline::catalog::Run>,
    pub c: Arc<forkline::catalog::Run>,
}

fn points(
    metric: &str,
    steps: impl IntoIterator<Item = u64>,
    value: impl Fn(u64) -> f64,
) -> Vec<MetricPoint> {
    steps
        .into_iter()
        .map(|s| MetricPoint::new(metric, s, value(s)))
        .collect()
}

/// The example from the product docs, with values that tell owners apart:
/// A logs `loss` = step on 0–100 and `acc` every 10 steps; B forks A at 50,
/// logs `loss` = 1000 + step on 51–200 and also re-logs 40–50 with -1 (hidden
/// from its stitched view); C forks B at 150 and logs `loss` = 2000 + step on 151–180.
pub async fn product_docs(engine: &Engine) -> Result<ProductDocs> {
    let a = engine
        .create_run(NewRun {
            project: "product-docs".into(),
            name: "A".into(),
            config: json!({"lr": 0.1, "opt": {"name": "adam", "beta": 0.9}})
                .as_object()
                .unwrap()
                .clone(),
            tags: vec!["base".into()],
            external_id: None,
        })
        .await?;
    engine
        .write_points(&a.display_id, points("loss", 0..=100, |s| s as f64))
        .await?;
    engine
        .write_points(
            &a.display_id,
            points("acc", (0..=100).step_by(10), |s| s as f64 / 100.0),
        )
        .await?;
    let mut fork_b = ForkRequest::new(a.display_id.clone(), 50);
    fork_b.name = Some("B".into());
    fork_b.config = json!({"opt": {"beta": 0.8}}).as_object().unwrap().clone();
    let b = engine.fork_run(fork_b).await?.run;
    engine
        .write_points(
            &b.display_id,
            points("loss", 51..=200, |s| 1000.0 + s as f64),
        )
        .await?;
    engine
        .write_points(&b.display_id, points("loss", 40..=50, |_| -1.0))
        .await?;
    let mut fork_c = ForkRequest::new(b.id.to_string(), 150);
    fork_c.name = Some("C".into());
    let c = engine.fork_run(fork_c).await?.run;
    engine
        .write_points(
            &c.display_id,
            points("loss", 151..=180, |s| 2000.0 + s as f64),
        )
        .await?;
    Ok(ProductDocs { a, b, c })
}

/// Runs `sql` and returns all rows rendered as strings (NULL for nulls).
pub async fn rows(engine: &Engine, sql: &str) -> Result<Vec<Vec<String>>> {
    Ok(render(&engine.collect(sql).await?))
}

/// Renders batches as rows of strings.
pub fn render(batches: &[arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    out
}

/// `got` equals `expected` cell for cell, text exactly; a float may differ
/// in its last bits, as sums added in another order do (two local runs
/// with other thread counts differ the same way).
pub fn assert_same(got: &[Vec<String>], expected: &[Vec<String>], name: &str) {
    assert_eq!(got.len(), expected.len(), "{name}: row count");
    for (g, e) in got.iter().zip(expected) {
        let close = g.len() == e.len()
            && g.iter().zip(e).all(|(a, b)| {
                a == b
                    || match (a.parse::<f64>(), b.parse::<f64>()) {
                        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                        _ => false,
                    }
            });
        assert!(close, "{name}: {g:?} != {e:?}");
    }
}

/// The S3-compatible server the tests run against, if any: `FORKLINE_TEST_S3`
/// (its endpoint) and `FORKLINE_TEST_S3_BUCKET` (default `forkline-test`), as
/// `tests/python/s3_server.py -- cargo test …` sets them. In-process engines
/// reach it through the standard `AWS_ENDPOINT_URL` / `AWS_ALLOW_HTTP` /
/// `AWS_REGION` that the helper also sets; spawned binaries through the
/// `--s3-*` flags (see [`forkline_command`]).
pub fn test_s3() -> Option<(String, String)> {
    let endpoint = std::env::var("FORKLINE_TEST_S3")
        .ok()
        .filter(|e| !e.is_empty())?;
    let bucket =
        std::env::var("FORKLINE_TEST_S3_BUCKET").unwrap_or_else(|_| "forkline-test".into());
    assert_eq!(
        std::env::var("AWS_ENDPOINT_URL").ok().as_deref(),
        Some(endpoint.as_str()),
        "FORKLINE_TEST_S3 is set: set AWS_ENDPOINT_URL (and AWS_ALLOW_HTTP=true) to the same \
         endpoint too, or run the tests under tests/python/s3_server.py"
    );
    Some((endpoint, bucket))
}

/// A fresh store: a directory in a temporary directory, or, when
/// [`test_s3`] names a server, a fresh prefix of its bucket (the temporary
/// directory then only makes the prefix unique and holds scratch files).
pub fn temp_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    if let Some((_, bucket)) = test_s3() {
        let unique = dir.path().file_name().unwrap().to_string_lossy();
        let url = format!(
            "s3://{bucket}/{}-{}",
            std::process::id(),
            unique.trim_start_matches('.')
        );
        return (dir, url);
    }
    let path = dir.path().join("warehouse").to_string_lossy().into_owned();
    (dir, path)
}

/// The real binary, pointed at the tests' S3 server (if any) by its own flags
/// rather than by the `AWS_*` variables, which it does not inherit then.
pub fn forkline_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_forkline"));
    if let Some((endpoint, _)) = test_s3() {
        command
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ALLOW_HTTP")
            .args(["--s3-endpoint", &endpoint, "--s3-allow-http"])
            .args(["--s3-region", "us-east-1"]);
    }
    command
}

/// A `forkline serve` process on a free loopback port, killed on drop.
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
    /// The Flight SQL endpoint (`http://addr`), when the server started one.
    pub flight: Option<String>,
}

impl Server {
    /// `POST path` with a JSON body; the JSON answer, whatever its status.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        response.json().await.unwrap()
    }

    /// `GET path`; the JSON answer, whatever its status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = reqwest::get(format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        response.json().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary on 127.0.0.1 with an OS-chosen port and waits until it answers.
pub fn spawn_server(store: &str) -> Server {
    spawn_server_with(store, &[])
}

/// As [`spawn_server`], with extra `serve` flags.
pub fn spawn_server_with(store: &str, extra: &[&str]) -> Server {
    use std::io::{BufRead, BufReader};
    let mut child = forkline_command()
        .args(["--store", store, "serve", "--listen", "127.0.0.1:0"])
        .args(["--flight-listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn forkline serve");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let flight_off = extra
        .windows(2)
        .any(|w| w[0] == "--flight-listen" && w[1] == "off");
    let flight = (!flight_off)
        .then(|| {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("grpc://"))
                .map(|addr| format!("http://{addr}"))
        })
        .flatten();
    // Keep the pipe open: a server whose later output hit a closed pipe would fail.
    std::thread::spawn(move || {
        for line in reader.lines().map_while(std::result::Result::ok) {
            eprintln!("[forkline serve stdout] {line}");
        }
    });
    Server {
        child,
        base,
        flight,
    }
}

/// A new API key made with `forkline keys create ARGS` (its secret).
pub fn create_key(store: &str, args: &[&str]) -> String {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(store, &all);
    assert!(ok, "{err}");
    out.trim().to_string()
}

/// Runs the real binary with `args`, returning (success, stdout, stderr).
pub fn cli(store: &str, args: &[&str]) -> (bool, String, String) {
    let out = forkline_command()
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run forkline");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// The store's objects, reached through the object store forkline builds for the
// store URL (`StoreLocation::parse`), so the same test reads and damages a
// local directory or an S3 prefix alike. Paths are relative to the store root
// (`metrics/_delta_log/00000000000000000000.json`). The helpers block: each
// runs its I/O on a runtime of its own in a thread of its own, so plain
// `#[test]`s and async tests call them the same way.

/// Runs `future` to completion on a fresh current-thread runtime in a scoped
/// thread (a panic inside is re-raised as it was).
fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Whether `store` is a local directory rather than a URL.
pub fn is_local(store: &str) -> bool {
    !store.contains("://")
}

/// The store's object store and the path of its root in it.
fn open_objects(store: &str) -> (Arc<dyn ObjectStore>, ObjectPath) {
    let location = StoreLocation::parse(store).unwrap();
    let root = ObjectPath::from_url_path(location.root.path().trim_matches('/')).unwrap();
    (location.object_store, root)
}

/// `relative` (a path under the store root) in the store's object store.
fn object_path(root: &ObjectPath, relative: &str) -> ObjectPath {
    let relative = relative.trim_matches('/');
    match (root.as_ref().is_empty(), relative.is_empty()) {
        (_, true) => root.clone(),
        (true, false) => ObjectPath::parse(relative).unwrap(),
        (false, false) => ObjectPath::parse(format!("{root}/{relative}")).unwrap(),
    }
}

/// Every object under `under` (a directory of the store, `""` for all of it),
/// by path relative to `under`. A local store that does not exist has none
/// (and is not created).
pub fn list_objects(store: &str, under: &str) -> BTreeMap<String, ObjectMeta> {
    if is_local(store) && !std::path::Path::new(store).exists() {
        return BTreeMap::new();
    }
    let (objects, root) = open_objects(store);
    let prefix = object_path(&root, under);
    block_on(async move {
        let listed: Vec<ObjectMeta> = objects
            .list(Some(&prefix))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("listing {prefix}: {e}"));
        listed
            .into_iter()
            .map(|meta| {
                let relative = meta
                    .location
                    .prefix_match(&prefix)
                    .unwrap_or_else(|| panic!("{} is not under {prefix}", meta.location))
                    .map(|part| part.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                (relative, meta)
            })
            .collect()
    })
}

/// Size of an object, or `None` when there is none at `relative`.
pub fn object_size(store: &str, relative: &str) -> Option<u64> {
    let (objects, root) = open_objects(store);
    let path = object_path(&root, relative);
    block_on(async move {
        match objects.head(&path).await {
            Ok(meta) => Some(meta.size),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("head {path}: {e}"),
        }
    })
}

/// The bytes of an object.
pub fn read_object(store: &str, relative: &str) -> Vec<u8> {
    let (objects, root) = open_objects(store);
    let path = object_path(&root, relative);
    block_on(async move {
        let result = objects
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("get {path}: {e}"));
        result.bytes().await.unwrap().to_vec()
    })
}

/// Creates or replaces an object.
pub fn write_object(store: &str, relative: &str, bytes: &[u8]) {
    let (objects, root) = open_objects(store);
    let path = object_path(&root, relative);
    let payload = bytes::Bytes::copy_from_slice(bytes);
    block_on(async move {
        objects
            .put(&path, payload.into())
            .await
            .unwrap_or_else(|e| panic!("put {path}: {e}"));
    })
}

/// Deletes an object, which must exist.
pub fn delete_object(store: &str, relative: &str) {
    assert!(
        object_size(store, relative).is_some(),
        "no object {relative} in {store}"
    );
    let (objects, root) = open_objects(store);
    let path = object_path(&root, relative);
    block_on(async move {
        objects
            .delete(&path)
            .await
            .unwrap_or_else(|e| panic!("delete {path}: {e}"));
    })
}

/// Replaces an object with its first `len` bytes.
pub fn truncate_object(store: &str, relative: &str, len: usize) {
    let bytes = read_object(store, relative);
    assert!(
        len < bytes.len(),
        "{relative} has only {} bytes",
        bytes.len()
    );
    write_object(store, relative, &bytes[..len]);
}

/// Versions of the commits in a table's Delta log (`<table>/_delta_log/N.json`), ascending.
pub fn commit_versions(store: &str, table: &str) -> Vec<u64> {
    list_objects(store, &format!("{table}/_delta_log"))
        .keys()
        .filter_map(|name| name.strip_suffix(".json")?.parse().ok())
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .collect()
}

/// Headless Chromium for the tests that render pages.
fn chromium() -> Option<std::path::PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// Chromium, or `None` (a SKIPPED note) where it is missing outside CI.
pub fn chromium_or_skip() -> Option<std::path::PathBuf> {
    let found = chromium();
    if found.is_none() {
        // CI installs Chromium (.ci/run): there a missing browser is a failure, not a skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed; .ci/run should have installed it"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
    }
    found
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// Every row of a Flight SQL statement, sent with `key` (if any).
pub async fn flight_batches(
    endpoint: &str,
    key: Option<&str>,
    sql: &str,
) -> Vec<arrow::array::RecordBatch> {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(key) = key {
        client.set_header("authorization", format!("Bearer {key}"));
    }
    let info = client.execute(sql.into(), None).await.unwrap();
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let part: Vec<arrow::array::RecordBatch> = client
            .do_get(endpoint.ticket.unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        batches.extend(part);
    }
    batches
}
