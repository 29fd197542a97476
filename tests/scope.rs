//! The scope matrix: every route of the HTTP router (enumerated from it, so a
//! new route cannot be left out) × every kind of key × every place a request
//! can name a project, against a real `forkline serve` on two projects. For
//! each cell: the expected status, nothing of the other project in the
//! answer, and the other project's state unchanged. The same for Flight SQL.

mod common;

use std::collections::BTreeMap;

use common::{spawn_server, temp_store};
use forkline::interfaces::http::{RouteAccess, RouteSpec, route_specs};
use reqwest::Method;
use serde_json::{Value, json};

/// A string only project `beta`'s data holds; no answer to a request that
/// may not see `beta` contains it.
const SECRET: &str = "beta-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    None,
    Invalid,
    OtherProject,
    ReadOnly,
    AllProjects,
    Right,
}

const KEYS: [Key; 6] = [
    Key::None,
    Key::Invalid,
    Key::OtherProject,
    Key::ReadOnly,
    Key::AllProjects,
    Key::Right,
];

/// Where the request names the project it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    Header,
    Query,
    Body,
    Nowhere,
}

const PLACES: [Named; 4] = [Named::Header, Named::Query, Named::Body, Named::Nowhere];

/// The two projects' fixtures: `beta` is the target of every request; keys
/// of `alpha` must not reach it.
struct World {
    server: common::Server,
    store: String,
    keys: BTreeMap<&'static str, String>,
    beta_run: Value,
    beta_display: String,
    beta_fork_parent: u64,
    download_path: String,
}

impl World {
    fn key(&self, key: Key) -> Option<String> {
        match key {
            Key::None => None,
            Key::Invalid => Some("fk_0000000000000000000000000000000000000000000000000".into()),
            Key::OtherProject => Some(self.keys["alpha"].clone()),
            Key::ReadOnly => Some(self.keys["beta-ro"].clone()),
            Key::AllProjects => Some(self.keys["all"].clone()),
            Key::Right => Some(self.keys["beta"].clone()),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (u16, String) {
        let mut request =
            reqwest::Client::new().request(method, format!("{}{path}", self.server.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn all(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let key = self.keys["all"].clone();
        let headers: Vec<(&str, &str)> = Vec::new();
        let (status, text) = self
            .send(
                method,
                path,
                Some(&key),
                &headers,
                body.map(|b| b.to_string()),
            )
            .await;
        assert!(status < 300, "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn sql(&self, sql: &str) -> Value {
        self.all(Method::POST, "/api/sql", Some(json!({ "sql": sql })))
            .await
    }

    /// Everything a request could change about each project: its runs
    /// (every field) and the count and sum of its points, logs, data and files.
    async fn state(&self) -> BTreeMap<String, Value> {
        let runs = self.sql("SELECT * FROM runs ORDER BY id").await;
        let counts = self
            .sql(
                "SELECT 'metrics' AS t, r.project, count(*) AS n, sum(m.value) AS s FROM metrics m JOIN runs r ON m.run_id = r.id GROUP BY r.project \
                 UNION ALL SELECT 'logs', r.project, count(*), NULL FROM logs l JOIN runs r ON l.run_id = r.id GROUP BY r.project \
                 UNION ALL SELECT 'data', r.project, count(*), NULL FROM data d JOIN runs r ON d.run_id = r.id GROUP BY r.project \
                 UNION ALL SELECT 'files', r.project, count(*), NULL FROM files f JOIN runs r ON f.run_id = r.id GROUP BY r.project \
                 ORDER BY 1, 2",
            )
            .await;
        let mut by_project: BTreeMap<String, Value> = BTreeMap::new();
        for row in runs
            .as_array()
            .unwrap()
            .iter()
            .chain(counts.as_array().unwrap())
        {
            let project = row["project"].as_str().unwrap().to_string();
            let entry = by_project.entry(project).or_insert_with(|| json!([]));
            entry.as_array_mut().unwrap().push(row.clone());
        }
        by_project
    }

    /// The store's objects, except the record of keys' last use.
    fn objects(&self) -> Vec<String> {
        common::list_objects(&self.store, "")
            .into_iter()
            .filter(|(path, _)| !path.starts_with("_forkline/keys/last-used"))
            .map(|(path, meta)| format!("{path} {}", meta.size))
            .collect()
    }
}

async fn world() -> (tempfile::TempDir, World) {
    let (dir, store) = temp_store();
    let mut keys = BTreeMap::new();
    // The keys of one project may delete; the key of every project may not.
    keys.insert(
        "alpha",
        common::create_key(&store, &["--project", "alpha", "--can-delete"]),
    );
    keys.insert(
        "beta",
        common::create_key(&store, &["--project", "beta,beta-*", "--can-delete"]),
    );
    keys.insert(
        "beta-ro",
        common::create_key(&store, &["--project", "beta", "--read-only"]),
    );
    keys.insert("all", common::create_key(&store, &[]));
    let server = spawn_server(&store);
    let mut w = World {
        server,
        store,
        keys,
        beta_run: Value::Null,
        beta_display: String::new(),
        beta_fork_parent: 0,
        download_path: String::new(),
    };
    for project in ["alpha", "beta"] {
        let secret = format!("{project}-secret");
        let run = w
            .all(
                Method::POST,
                "/api/runs/create",
                Some(json!({"runName": secret, "projectName": project,
                            "config": {"token": secret}, "tags": [secret]})),
            )
            .await;
        let id = run["runId"].to_string();
        let key = w.keys["all"].clone();
        let lines: String = (0..20)
            .map(|s| format!("{{\"time\": 1700000000000, \"step\": {s}, \"data\": {{\"{secret}/loss\": {s}}}}}\n"))
            .collect();
        for (path, body) in [
            ("/ingest/metrics", lines),
            (
                "/ingest/logs",
                format!(
                    "{{\"time\": 1700000000000, \"message\": \"{secret}\", \"lineNumber\": 1, \"logType\": \"INFO\"}}\n"
                ),
            ),
            (
                "/ingest/data",
                format!(
                    "{{\"time\": 1700000000000, \"step\": 1, \"logName\": \"{secret}\", \"dataType\": \"TEXT\", \"data\": \"{secret}\"}}\n"
                ),
            ),
        ] {
            let (status, text) = w
                .send(
                    Method::POST,
                    path,
                    Some(&key),
                    &[("x-run-id", &id)],
                    Some(body),
                )
                .await;
            assert_eq!(status, 200, "{path}: {text}");
        }
        let spec = json!({"files": [{"fileName": format!("{secret}.txt"), "fileSize": secret.len(),
                                     "fileType": "txt", "time": 1, "logName": secret, "step": 1}]});
        let (status, urls) = w
            .send(
                Method::POST,
                "/files",
                Some(&key),
                &[("x-run-id", &id)],
                Some(spec.to_string()),
            )
            .await;
        assert_eq!(status, 200, "{urls}");
        let urls: Value = serde_json::from_str(&urls).unwrap();
        let url = urls[&secret][0][format!("{secret}.txt")]
            .as_str()
            .unwrap()
            .to_string();
        let put = reqwest::Client::new()
            .put(&url)
            .body(secret.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        if project == "beta" {
            let fork = w
                .all(
                    Method::POST,
                    "/api/runs/create",
                    Some(json!({"runName": "fork", "projectName": project,
                                "forkRunId": run["runId"], "forkStep": 10})),
                )
                .await;
            w.beta_fork_parent = fork["forkedFromRunId"].as_u64().unwrap();
            w.beta_display = run["displayId"].as_str().unwrap().to_string();
            w.beta_run = run;
            let files = w
                .all(Method::GET, &format!("/api/runs/files?runId={id}"), None)
                .await;
            let download = files["files"][0]["downloadUrl"].as_str().unwrap();
            w.download_path = download.trim_start_matches(&w.server.base).to_string();
        }
    }
    (dir, w)
}

/// How a route is called to act on project `beta`'s run.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Whether the request addresses a run (an unseen run answers 404) or a project by name.
    addresses: Addresses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addresses {
    /// A run of `beta` by id: unseen runs are 404.
    Run,
    /// The project by name (query or body): required, so 400 when not named.
    Project,
    /// Nothing in particular (SQL, the project list, the key check).
    Nothing,
    /// The project in the path (the console's pages): a key that does not open it gets 403.
    PathProject,
}

/// The request of every route: a route without one fails the test, so a new
/// route needs a row here.
fn call_for(spec: &RouteSpec, w: &World) -> Call {
    let id = w.beta_run["runId"].as_u64().unwrap();
    let display = &w.beta_display;
    let (path, body, addresses): (String, Option<Value>, Addresses) = match spec.path {
        "/health" => ("/health".into(), None, Addresses::Nothing),
        "/metrics" => ("/metrics".into(), None, Addresses::Nothing),
        "/api/openapi.json" => (spec.path.into(), None, Addresses::Nothing),
        "/api/sql" => (
            spec.path.into(),
            Some(
                json!({"sql": format!("SELECT r.name, r.config, m.metric FROM runs r LEFT JOIN metrics m ON m.run_id = r.id WHERE r.id = {id}")}),
            ),
            Addresses::Nothing,
        ),
        "/api/export" => (
            format!("/api/export?run={display}&format=csv"),
            None,
            Addresses::Run,
        ),
        "/api/report" => (
            "/api/report?format=json&all_families=true&metrics=beta-secret/loss".into(),
            None,
            Addresses::Project,
        ),
        "/api/runs/create" => (
            spec.path.into(),
            Some(json!({"runName": "new"})),
            Addresses::Project,
        ),
        "/api/runs/resume" | "/api/runs/trigger" | "/api/runs/logName/add" => {
            (spec.path.into(), Some(json!({"runId": id})), Addresses::Run)
        }
        "/api/runs/status/update" => (
            spec.path.into(),
            Some(json!({"runId": id, "status": "COMPLETED"})),
            Addresses::Run,
        ),
        "/api/runs/tags/update" => (
            spec.path.into(),
            Some(json!({"runId": id, "tags": ["changed"]})),
            Addresses::Run,
        ),
        "/api/runs/config/update" => (
            spec.path.into(),
            Some(json!({"runId": id, "config": {"changed": true}})),
            Addresses::Run,
        ),
        "/ingest/metrics" | "/ingest/logs" | "/ingest/data" | "/files" => {
            let body = match spec.path {
                "/ingest/metrics" => json!("{\"step\": 99, \"data\": {\"x\": 1}}\n"),
                "/ingest/logs" => json!("{\"time\": 1700000000000, \"message\": \"m\"}\n"),
                "/ingest/data" => json!(
                    "{\"time\": 1700000000000, \"logName\": \"d\", \"dataType\": \"TEXT\", \"data\": \"x\"}\n"
                ),
                _ => json!({"files": [{"fileName": "n.txt", "fileSize": 1, "logName": "n"}]}),
            };
            (spec.path.into(), Some(body), Addresses::Run)
        }
        "/files/upload/{run}/{file}" => (
            format!(
                "/files/upload/{id}/forged.txt?logName=x&size=1&exact=true&nonce={}&expires=9999999999&sig=00",
                "0".repeat(64)
            ),
            Some(json!("x")),
            Addresses::Nothing,
        ),
        "/files/download/{run}/{file}" => (w.download_path.clone(), None, Addresses::Nothing),
        "/api/slug" => (spec.path.into(), Some(json!({})), Addresses::Nothing),
        "/api/runs/projects" => (spec.path.into(), None, Addresses::Nothing),
        "/api/runs/list" | "/api/runs/metric-names" => (spec.path.into(), None, Addresses::Project),
        "/api/runs/leaderboard" => (
            "/api/runs/leaderboard?logName=beta-secret/loss".into(),
            None,
            Addresses::Project,
        ),
        "/api/runs/details/by-display-id/{display_id}" => (
            format!("/api/runs/details/by-display-id/{display}"),
            None,
            Addresses::Run,
        ),
        "/api/runs/details/{id}" => (format!("/api/runs/details/{id}"), None, Addresses::Run),
        "/api/runs/metrics" => (
            format!("/api/runs/metrics?runId={id}&stitched=true"),
            None,
            Addresses::Run,
        ),
        "/api/runs/statistics" | "/api/runs/logs" | "/api/runs/files" => {
            (format!("{}?runId={id}", spec.path), None, Addresses::Run)
        }
        "/api/runs/compare" => (
            format!("/api/runs/compare?runIds={id}&logName=beta-secret/loss"),
            None,
            Addresses::Run,
        ),
        // Beta's run has a fork: a deletion without the cascade is refused
        // (409), and the world stays as it is for the next cells.
        "/api/runs/{id}" => (format!("/api/runs/{id}"), None, Addresses::Run),
        "/api/runs/delete" => (
            spec.path.into(),
            Some(json!({"runIds": [id]})),
            Addresses::Run,
        ),
        // A project the beta key opens (`beta-*`) that does not exist.
        "/api/projects/{name}" => (
            "/api/projects/beta-gone".into(),
            None,
            Addresses::PathProject,
        ),
        // The console's shell and assets hold no data: public.
        "/" | "/sql" | "/console/console.js" | "/console/console.css" => {
            (spec.path.into(), None, Addresses::Nothing)
        }
        "/p/{project}" => ("/p/beta".into(), None, Addresses::Nothing),
        "/p/{project}/f/{run}" => (format!("/p/beta/f/{display}"), None, Addresses::Nothing),
        "/p/{project}/r/{run}" => (format!("/p/beta/r/{display}"), None, Addresses::Nothing),
        "/p/{project}/compare" => (
            format!("/p/beta/compare?runs={display}"),
            None,
            Addresses::Nothing,
        ),
        // The console's pages: what the shell shows, rendered for the key.
        "/api/console/p" => (spec.path.into(), None, Addresses::Nothing),
        "/api/console/p/{project}" => ("/api/console/p/beta".into(), None, Addresses::PathProject),
        "/api/console/p/{project}/f/{run}" => (
            format!("/api/console/p/beta/f/{display}?metric=beta-secret/loss"),
            None,
            Addresses::PathProject,
        ),
        "/api/console/p/{project}/r/{run}" => (
            format!("/api/console/p/beta/r/{display}"),
            None,
            Addresses::PathProject,
        ),
        "/api/console/p/{project}/compare" => (
            format!("/api/console/p/beta/compare?runs={display}&metric=beta-secret/loss"),
            None,
            Addresses::PathProject,
        ),
        other => panic!(
            "route {} {other} has no row in the scope matrix: add one to tests/scope.rs",
            spec.method
        ),
    };
    Call {
        method: Method::from_bytes(spec.method.as_str().as_bytes()).unwrap(),
        path,
        body,
        addresses,
    }
}

/// Whether the cell names the project where the route reads it: the create
/// body (the cell adds it there for a header too), the report's query.
fn named_in(spec: &RouteSpec, named: Named) -> bool {
    match spec.path {
        "/api/runs/create" => matches!(named, Named::Body | Named::Header),
        "/api/report" => named == Named::Query,
        _ => false,
    }
}

/// The status a cell must answer, in the order the server decides it:
/// the key, then the projects named in header and query, then write
/// permission, then the route's own checks.
fn expected(spec: &RouteSpec, call: &Call, key: Key, named: Named) -> u16 {
    match spec.access {
        RouteAccess::Public => return 200,
        // The matrix's server listens on loopback: no key needed (tests/observe.rs
        // checks the keyed case off loopback).
        RouteAccess::Monitoring => return 200,
        // The URL is the capability and keys change nothing: the download
        // URL was signed for beta's file, the upload URL is forged.
        RouteAccess::Signed if spec.method == axum::http::Method::GET => return 200,
        RouteAccess::Signed => return 400,
        RouteAccess::Read | RouteAccess::Write => {}
    }
    if matches!(key, Key::None | Key::Invalid) {
        return 401;
    }
    // X-Project-Name and `projectName` in the query are checked against the key
    // before any handler runs (the report names its project as `project`).
    let named_outside_body =
        named == Named::Header || (named == Named::Query && spec.path != "/api/report");
    if key == Key::OtherProject && named_outside_body {
        return 403;
    }
    if key == Key::ReadOnly && spec.access == RouteAccess::Write {
        return 403;
    }
    let deletes = matches!(
        spec.path,
        "/api/runs/{id}" | "/api/runs/delete" | "/api/projects/{name}"
    );
    if deletes && key == Key::AllProjects {
        return 403;
    }
    match spec.path {
        "/api/runs/{id}" | "/api/runs/delete" if key == Key::OtherProject => 404,
        "/api/runs/{id}" | "/api/runs/delete" => 409,
        "/api/projects/{name}" if key == Key::OtherProject => 403,
        "/api/projects/{name}" => 404,
        // The body must name the project (the cell adds it for Header too).
        "/api/runs/create" | "/api/report" if key == Key::OtherProject && named_in(spec, named) => {
            403
        }
        "/api/runs/create" | "/api/report" if named_in(spec, named) => 200,
        "/api/runs/create" => 400,
        "/api/report" => 400,
        _ if call.addresses == Addresses::Project => {
            if named == Named::Query {
                200
            } else {
                400
            }
        }
        _ if call.addresses == Addresses::Run && key == Key::OtherProject => 404,
        _ if call.addresses == Addresses::PathProject && key == Key::OtherProject => 403,
        _ => 200,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_every_key_every_place() {
    let (_dir, w) = world().await;
    let routes = route_specs();
    assert!(routes.len() >= 25, "{routes:?}");
    let mut cells = 0;
    // Nothing else changes the store, so each cell's "after" is the next one's "before".
    let mut before = w.state().await;
    let mut objects_before = w.objects();
    for spec in &routes {
        for key in KEYS {
            for named in PLACES {
                let call = call_for(spec, &w);
                let want = expected(spec, &call, key, named);
                let mut path = call.path.clone();
                let mut headers: Vec<(&str, &str)> = Vec::new();
                let mut body = call.body.clone();
                let run_id = w.beta_run["runId"].to_string();
                if spec.path.starts_with("/ingest/") || spec.path == "/files" {
                    headers.push(("x-run-id", &run_id));
                }
                match named {
                    Named::Header => headers.push(("x-project-name", "beta")),
                    // A signed URL's query is what its signature covers.
                    Named::Query if spec.access == RouteAccess::Signed => {}
                    Named::Query => {
                        path.push(if path.contains('?') { '&' } else { '?' });
                        path.push_str(if spec.path == "/api/report" {
                            "project=beta"
                        } else {
                            "projectName=beta"
                        });
                    }
                    Named::Body => {
                        if let Some(Value::Object(b)) = body.as_mut() {
                            b.insert("projectName".into(), json!("beta"));
                        }
                    }
                    Named::Nowhere => {}
                }
                // The create route needs the body's project whatever else names it.
                if spec.path == "/api/runs/create"
                    && named == Named::Header
                    && let Some(Value::Object(b)) = body.as_mut()
                {
                    b.insert("projectName".into(), json!("beta"));
                }
                let body_text = body.map(|b| match b {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
                let key_text = w.key(key);
                let (status, text) = w
                    .send(
                        call.method.clone(),
                        &path,
                        key_text.as_deref(),
                        &headers,
                        body_text,
                    )
                    .await;
                let cell = format!("{} {path} key={key:?} named={named:?}", spec.method);
                assert_eq!(status, want, "{cell}: {text}");
                if (key == Key::OtherProject || status >= 400) && spec.access != RouteAccess::Signed
                {
                    assert!(!text.contains(SECRET), "{cell} leaked beta: {text}");
                }
                let after = w.state().await;
                assert_eq!(
                    after.get("alpha"),
                    before.get("alpha"),
                    "{cell} changed alpha"
                );
                if status >= 400 || spec.access != RouteAccess::Write {
                    assert_eq!(after.get("beta"), before.get("beta"), "{cell} changed beta");
                }
                let objects_after = w.objects();
                if status >= 400 {
                    assert_eq!(objects_after, objects_before, "{cell} wrote to the store");
                }
                before = after;
                objects_before = objects_after;
                cells += 1;
            }
        }
    }
    assert_eq!(cells, routes.len() * KEYS.len() * PLACES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_projects_do_not_exist_for_a_key() {
    let (_dir, w) = world().await;
    let alpha = w.key(Key::OtherProject).unwrap();
    // The project list shows the key's projects only.
    let (status, text) = w
        .send(Method::GET, "/api/runs/projects", Some(&alpha), &[], None)
        .await;
    assert_eq!(status, 200);
    let projects: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = projects["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);
    // SQL sees none of beta's rows, through any table or table function.
    let id = w.beta_run["runId"].as_u64().unwrap();
    for sql in [
        "SELECT * FROM runs".to_string(),
        "SELECT * FROM metrics".to_string(),
        "SELECT * FROM logs".to_string(),
        "SELECT * FROM data".to_string(),
        "SELECT * FROM files".to_string(),
        "SELECT * FROM metric_writes".to_string(),
    ] {
        let (status, text) = w
            .send(
                Method::POST,
                "/api/sql",
                Some(&alpha),
                &[],
                Some(json!({"sql": sql}).to_string()),
            )
            .await;
        assert_eq!(status, 200, "{sql}: {text}");
        assert!(!text.contains(SECRET), "{sql}: {text}");
    }
    for sql in [
        format!("SELECT * FROM stitched_metrics({id})"),
        format!("SELECT * FROM family_metrics('{}')", w.beta_display),
        "SELECT * FROM project_metrics('beta')".to_string(),
    ] {
        let (status, text) = w
            .send(
                Method::POST,
                "/api/sql",
                Some(&alpha),
                &[],
                Some(json!({"sql": sql}).to_string()),
            )
            .await;
        assert!(
            status == 404 || status == 400 || (status == 200 && !text.contains(SECRET)),
            "{sql}: {status} {text}"
        );
        assert!(!text.contains(SECRET), "{sql}: {text}");
    }
    // A fork of beta's run through an alpha key: unknown run.
    let fork = json!({"runName": "f", "projectName": "alpha", "forkRunId": w.beta_fork_parent, "forkStep": 1});
    let (status, text) = w
        .send(
            Method::POST,
            "/api/runs/create",
            Some(&alpha),
            &[],
            Some(fork.to_string()),
        )
        .await;
    assert_eq!(status, 404, "{text}");
    // Header and query that disagree are refused, whatever the key.
    let all = w.key(Key::AllProjects).unwrap();
    let (status, text) = w
        .send(
            Method::GET,
            "/api/runs/list?projectName=alpha",
            Some(&all),
            &[("x-project-name", "beta")],
            None,
        )
        .await;
    assert_eq!(status, 400, "{text}");
    // Revoked keys stop working.
    let (ok, listed, err) = common::cli(&w.store, &["keys", "list"]);
    assert!(ok, "{err}");
    assert_eq!(listed.lines().count(), 5, "{listed}");
    let alpha_line = listed.lines().find(|l| l.contains("\talpha\t")).unwrap();
    let id_prefix = &alpha_line[..8];
    let (ok, _, err) = common::cli(&w.store, &["keys", "revoke", id_prefix]);
    assert!(ok, "{err}");
    let mut revoked = false;
    for _ in 0..50 {
        let (status, _) = w
            .send(Method::GET, "/api/runs/projects", Some(&alpha), &[], None)
            .await;
        if status == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(revoked, "a revoked key still works");
    let (_, listed, _) = common::cli(&w.store, &["keys", "list"]);
    let alpha_line = listed.lines().find(|l| l.contains("\talpha\t")).unwrap();
    assert!(!alpha_line.ends_with("\t-"), "{alpha_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_urls_are_single_use_sized_and_use_the_public_url() {
    let (dir, store) = temp_store();
    let _ = dir;
    let server =
        common::spawn_server_with(&store, &["--public-url", "https://tracker.example.com/"]);
    let client = reqwest::Client::new();
    let run: Value = client
        .post(format!("{}/api/runs/create", server.base))
        .header("host", "attacker.example")
        .json(&json!({"runName": "r", "projectName": "p"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        run["url"]
            .as_str()
            .unwrap()
            .starts_with("https://tracker.example.com/runs/"),
        "{run}"
    );
    let id = run["runId"].to_string();
    let spec = json!({"files": [
        {"fileName": "a b?#%2F.txt", "fileSize": 4, "logName": "doc"},
    ]});
    let urls: Value = client
        .post(format!("{}/files", server.base))
        .header("host", "attacker.example")
        .header("x-run-id", &id)
        .json(&spec)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = urls["doc"][0]["a b?#%2F.txt"].as_str().unwrap();
    assert!(
        url.starts_with("https://tracker.example.com/files/upload/"),
        "{url}"
    );
    let local = format!(
        "{}{}",
        server.base,
        url.trim_start_matches("https://tracker.example.com")
    );
    // Larger than signed for: refused, and the URL stays usable.
    let over = client.put(&local).body("abcde").send().await.unwrap();
    assert_eq!(over.status(), 413);
    // 20 MiB for 4 bytes: refused as soon as the fifth byte arrives (the
    // client may see the refusal or the connection closed under its upload).
    match client.put(&local).body(vec![b'x'; 20 << 20]).send().await {
        Ok(big) => assert_eq!(big.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let short = client.put(&local).body("abc").send().await.unwrap();
    assert_eq!(short.status(), 400);
    let ok = client.put(&local).body("abcd").send().await.unwrap();
    assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
    // Used once: a replay is refused.
    for _ in 0..3 {
        let replay = client.put(&local).body("abcd").send().await.unwrap();
        assert_eq!(replay.status(), 403);
    }
    let files: Value = client
        .get(format!("{}/api/runs/files?runId={id}", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = files["files"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{files}");
    let download = listed[0]["downloadUrl"].as_str().unwrap();
    assert!(
        download.starts_with("https://tracker.example.com/"),
        "{download}"
    );
    let local = format!(
        "{}{}",
        server.base,
        download.trim_start_matches("https://tracker.example.com")
    );
    let bytes = client.get(&local).send().await.unwrap();
    assert_eq!(bytes.status(), 200);
    assert_eq!(bytes.text().await.unwrap(), "abcd");
}

/// What one Flight SQL call answered: its status code, or the rows' text.
async fn flight_call(endpoint: &str, key: Option<&str>, call: &str) -> Result<String, tonic::Code> {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables};
    use futures::TryStreamExt;
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(key) = key {
        client.set_header("authorization", format!("Bearer {key}"));
    }
    let code = |e: arrow_flight::error::FlightError| match e {
        arrow_flight::error::FlightError::Tonic(status) => status.code(),
        other => panic!("{call}: {other}"),
    };
    let info = match call {
        "statement" => client
            .execute("SELECT r.name, r.config, m.metric FROM runs r LEFT JOIN metrics m ON m.run_id = r.id".into(), None)
            .await,
        "prepared" => {
            let prepared = client
                .prepare("SELECT name, config FROM runs".into(), None)
                .await;
            match prepared {
                Ok(mut p) => p.execute().await,
                Err(e) => Err(e),
            }
        }
        "update" => {
            return client
                .execute_update("DELETE FROM runs".into(), None)
                .await
                .map(|n| n.to_string())
                .map_err(code);
        }
        "tables" => {
            client
                .get_tables(CommandGetTables {
                    include_schema: false,
                    ..Default::default()
                })
                .await
        }
        "schemas" => client.get_db_schemas(CommandGetDbSchemas::default()).await,
        "catalogs" => client.get_catalogs().await,
        "table_types" => client.get_table_types().await,
        other => panic!("unknown call {other}"),
    }
    .map_err(code)?;
    let mut text = String::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let batches: Vec<arrow::array::RecordBatch> = client
            .do_get(ticket)
            .await
            .map_err(code)?
            .try_collect()
            .await
            .map_err(code)?;
        text.push_str(
            &arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string(),
        );
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_every_call_every_key() {
    let (_dir, w) = world().await;
    let endpoint = w
        .server
        .flight
        .clone()
        .expect("the server serves Flight SQL");
    for call in [
        "statement",
        "prepared",
        "update",
        "tables",
        "schemas",
        "catalogs",
        "table_types",
    ] {
        for key in KEYS {
            let before = w.state().await;
            let answer = flight_call(&endpoint, w.key(key).as_deref(), call).await;
            let cell = format!("flight {call} key={key:?}");
            match (key, call) {
                (Key::None | Key::Invalid, _) => {
                    assert_eq!(answer, Err(tonic::Code::Unauthenticated), "{cell}")
                }
                // Flight SQL is read-only for every key.
                (_, "update") => assert!(answer.is_err(), "{cell}: {answer:?}"),
                (Key::OtherProject, _) => {
                    let text = answer.unwrap_or_else(|c| panic!("{cell}: {c:?}"));
                    assert!(!text.contains(SECRET), "{cell} leaked beta: {text}");
                }
                (_, "statement" | "prepared") => {
                    let text = answer.unwrap_or_else(|c| panic!("{cell}: {c:?}"));
                    assert!(text.contains(SECRET), "{cell} does not see beta: {text}");
                }
                _ => {
                    answer.unwrap_or_else(|c| panic!("{cell}: {c:?}"));
                }
            }
            assert_eq!(w.state().await, before, "{cell} changed the store");
        }
    }
}
