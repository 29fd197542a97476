//! Random and mutated bodies against the real server's write routes: every
//! answer is a 2xx or a 4xx with a JSON error, the server stays up, and a
//! refused request commits nothing (counts through SQL before and after).
//!
//! Well-formed requests are generated with what each of their values is, so
//! the test knows, by the rules the README's API section and "Limits" state,
//! whether the server must accept one and how many rows it then stores (and
//! which run a create makes); the server's answer is checked against that.
//! A body mutated at a byte, or random bytes, is not modelled: of those the
//! test checks only that a refusal commits nothing and that an acceptance
//! stores what the answer says.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{spawn_server_with, temp_store};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const ROUTES: [&str; 4] = [
    "/ingest/metrics",
    "/ingest/logs",
    "/ingest/data",
    "/api/runs/create",
];

/// The run every ingest request names (`X-Run-Id`): the first of the store.
const TARGET: u64 = 1;

/// What a JSON value the generator wrote is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A number written as an integer.
    Int(i128),
    /// A number written with a fraction or an exponent.
    Float(f64),
    /// A bare `NaN`, `Infinity` or `-Infinity` (Python's `json.dumps`).
    NonFinite,
    /// A string; `non_finite` when it is "NaN", "Infinity" or "-Infinity".
    Str {
        non_finite: bool,
    },
    Null,
    Bool,
    Array,
    Object,
    /// Not JSON (`inf`, as Rust writes an infinity).
    Broken,
}

/// A JSON value as written, and what it is.
#[derive(Debug, Clone)]
struct Tok {
    text: String,
    kind: Kind,
}

impl Tok {
    fn new(text: impl Into<String>, kind: Kind) -> Self {
        Tok {
            text: text.into(),
            kind,
        }
    }

    fn int(i: impl Into<i128>) -> Self {
        let i = i.into();
        Tok::new(i.to_string(), Kind::Int(i))
    }

    /// A float as Rust writes it (`{:?}`): infinities come out as `inf`.
    fn float(text: String) -> Self {
        match text.as_str() {
            "NaN" => Tok::new(text, Kind::NonFinite),
            "inf" | "-inf" => Tok::new(text, Kind::Broken),
            _ => {
                let value = text.parse().unwrap();
                Tok::new(text, Kind::Float(value))
            }
        }
    }

    /// A time: absent (null) or epoch milliseconds in 1970-01-01 up to
    /// 2200-01-01, rounded to microseconds.
    fn time_ok(&self) -> bool {
        let in_window = |ms: f64| {
            let us = (ms * 1000.0).round();
            (0.0..7_258_118_400_000_000.0).contains(&us)
        };
        match self.kind {
            Kind::Null => true,
            Kind::Int(i) => in_window(i as f64),
            Kind::Float(f) => in_window(f),
            _ => false,
        }
    }

    /// A step: absent (null, step 0) or an integer ≥ 0 that fits an i64,
    /// written as an integer or as a float with no fraction (below 9.2e18).
    fn step_ok(&self) -> Option<u64> {
        match self.kind {
            Kind::Null => Some(0),
            Kind::Int(i) if (0..=i64::MAX as i128).contains(&i) => Some(i as u64),
            Kind::Float(f) if f.fract() == 0.0 && (0.0..9.2e18).contains(&f) => Some(f as u64),
            _ => None,
        }
    }

    /// A value of `forkRunId` / `forkStep`: an integer ≥ 0 (a u64).
    fn non_negative(&self) -> Option<u64> {
        match self.kind {
            Kind::Int(i) => u64::try_from(i).ok(),
            _ => None,
        }
    }
}

/// A metric value as ingest reads it.
enum Reading {
    Number,
    /// `None`: the line's other values are kept.
    Null,
    Refused,
}

fn reading(tok: &Tok) -> Reading {
    match tok.kind {
        Kind::Int(_) | Kind::Float(_) | Kind::NonFinite | Kind::Str { non_finite: true } => {
            Reading::Number
        }
        Kind::Null => Reading::Null,
        _ => Reading::Refused,
    }
}

/// Edge values: non-finite tokens, nulls, wrong types, out-of-range numbers.
fn edge() -> impl Strategy<Value = Tok> {
    let listed = vec![
        ("NaN", Kind::NonFinite),
        ("Infinity", Kind::NonFinite),
        ("-Infinity", Kind::NonFinite),
        ("\"NaN\"", Kind::Str { non_finite: true }),
        ("null", Kind::Null),
        ("true", Kind::Bool),
        ("\"x\"", Kind::Str { non_finite: false }),
        ("[]", Kind::Array),
        ("{}", Kind::Object),
        ("1e300", Kind::Float(1e300)),
        ("-1", Kind::Int(-1)),
        ("9.2e15", Kind::Float(9.2e15)),
        ("18446744073709551616", Kind::Int(1 << 64)),
        ("0.5", Kind::Float(0.5)),
    ];
    prop_oneof![
        any::<f64>().prop_map(|f| Tok::float(format!("{f:?}"))),
        any::<i64>().prop_map(Tok::int),
        prop::sample::select(listed).prop_map(|(text, kind)| Tok::new(text, kind)),
    ]
}

/// Mostly what the SDK sends, sometimes an edge.
fn mostly(good: impl Strategy<Value = Tok> + 'static) -> BoxedStrategy<Tok> {
    prop_oneof![12 => good, 1 => edge()].boxed()
}

fn time() -> BoxedStrategy<Tok> {
    mostly((0u64..7_258_118_399_999).prop_map(Tok::int))
}

fn step() -> BoxedStrategy<Tok> {
    mostly((0u64..10_000).prop_map(Tok::int))
}

fn number() -> BoxedStrategy<Tok> {
    mostly(any::<f32>().prop_map(|f| Tok::float(format!("{f:?}"))))
}

/// A name, a project or a tag (written as a JSON string).
fn name() -> BoxedStrategy<String> {
    prop_oneof![
        12 => "[a-z/_]{1,12}",
        1 => Just(String::new()),
        1 => Just(" ".to_string()),
        1 => "\\PC{0,6}",
    ]
    .boxed()
}

/// Not blank (Rust's `trim`, as the server's check).
fn named(name: &str) -> bool {
    !name.trim().is_empty()
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// One line (or, for a create, the document) of a request.
#[derive(Debug, Clone)]
enum Line {
    Metrics {
        time: Tok,
        step: Tok,
        data: Vec<(String, Tok)>,
    },
    Log {
        time: Tok,
        message: String,
        line_number: Tok,
        log_type: String,
    },
    Data {
        time: Tok,
        step: Tok,
        log_name: String,
        data_type: String,
        data: Tok,
    },
    Create {
        project: String,
        run: String,
        lr: Tok,
        tags: Vec<String>,
        fork: Option<(Tok, Tok)>,
    },
}

impl Line {
    fn render(&self) -> String {
        match self {
            Line::Metrics { time, step, data } => {
                let data: Vec<String> = data
                    .iter()
                    .map(|(k, v)| format!("{}: {}", quoted(k), v.text))
                    .collect();
                format!(
                    "{{\"time\": {}, \"step\": {}, \"data\": {{{}}}}}",
                    time.text,
                    step.text,
                    data.join(", ")
                )
            }
            Line::Log {
                time,
                message,
                line_number,
                log_type,
            } => format!(
                "{{\"time\": {}, \"message\": {}, \"lineNumber\": {}, \"logType\": {}}}",
                time.text,
                quoted(message),
                line_number.text,
                quoted(log_type)
            ),
            Line::Data {
                time,
                step,
                log_name,
                data_type,
                data,
            } => format!(
                "{{\"time\": {}, \"step\": {}, \"logName\": {}, \"dataType\": {}, \"data\": {}}}",
                time.text,
                step.text,
                quoted(log_name),
                quoted(data_type),
                data.text
            ),
            Line::Create {
                project,
                run,
                lr,
                tags,
                fork,
            } => {
                let tags: Vec<String> = tags.iter().map(|t| quoted(t)).collect();
                let mut body = format!(
                    "{{\"projectName\": {}, \"runName\": {}, \"config\": {{\"lr\": {}}}, \"tags\": [{}]",
                    quoted(project),
                    quoted(run),
                    lr.text,
                    tags.join(", ")
                );
                if let Some((run, step)) = fork {
                    body.push_str(&format!(
                        ", \"forkRunId\": {}, \"forkStep\": {}",
                        run.text, step.text
                    ));
                }
                body.push('}');
                body
            }
        }
    }

    /// Every value written, for lines whose JSON must parse.
    fn tokens(&self) -> Vec<&Tok> {
        match self {
            Line::Metrics { time, step, data } => {
                let mut all = vec![time, step];
                all.extend(data.iter().map(|(_, v)| v));
                all
            }
            Line::Log {
                time, line_number, ..
            } => vec![time, line_number],
            Line::Data {
                time, step, data, ..
            } => vec![time, step, data],
            Line::Create { lr, fork, .. } => {
                let mut all = vec![lr];
                if let Some((run, step)) = fork {
                    all.extend([run, step]);
                }
                all
            }
        }
    }
}

/// One line shaped like the route's, with random values.
fn line(route: usize) -> BoxedStrategy<Line> {
    match route {
        0 => (
            time(),
            step(),
            prop::collection::vec((name(), number()), 0..5),
        )
            .prop_map(|(time, step, data)| Line::Metrics { time, step, data })
            .boxed(),
        1 => (time(), name(), step(), name())
            .prop_map(|(time, message, line_number, log_type)| Line::Log {
                time,
                message,
                line_number,
                log_type,
            })
            .boxed(),
        2 => (time(), step(), name(), name(), number())
            .prop_map(|(time, step, log_name, data_type, data)| Line::Data {
                time,
                step,
                log_name,
                data_type,
                data,
            })
            .boxed(),
        _ => {
            // Forks of the target (or of another early run), in the
            // target's project or any other.
            let project = prop_oneof![1 => Just("fuzz".to_string()), 1 => name()];
            let parent = prop_oneof![
                3 => Just(Tok::int(TARGET)),
                1 => (1u64..40).prop_map(Tok::int),
                1 => step(),
            ];
            (
                project,
                name(),
                number(),
                prop::collection::vec(name(), 0..3),
                prop::option::weighted(0.4, (parent, step())),
            )
                .prop_map(|(project, run, lr, tags, fork)| Line::Create {
                    project,
                    run,
                    lr,
                    tags,
                    fork,
                })
                .boxed()
        }
    }
}

/// A request body: well-formed lines, those mutated at one byte, or raw bytes.
#[derive(Debug, Clone)]
enum Body {
    Lines(Vec<Line>),
    Mutated(Vec<u8>),
}

fn body(route: usize) -> impl Strategy<Value = Body> {
    // A run request is one JSON document, not lines.
    let most = if route == 3 { 1 } else { 4 };
    let lines = prop::collection::vec(line(route), 1..=most);
    prop_oneof![
        5 => lines.clone().prop_map(Body::Lines),
        2 => (lines, any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(|(lines, at, byte, edit)| {
            let mut b = render(&lines);
            let at = at.index(b.len());
            match edit {
                0 => b.insert(at, byte),
                1 => b.truncate(at),
                _ => b[at] = byte,
            }
            // A change that changed nothing leaves the lines as they were.
            if b == render(&lines) {
                Body::Lines(lines)
            } else {
                Body::Mutated(b)
            }
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Body::Mutated),
    ]
}

fn render(lines: &[Line]) -> Vec<u8> {
    lines
        .iter()
        .map(Line::render)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

/// The runs the store holds, as the test made them.
#[derive(Debug, Default)]
struct Model {
    /// Per run: its project, and its parent and fork step for a fork.
    runs: BTreeMap<u64, (String, Option<(u64, u64)>)>,
    /// The steps of each run's own points (only the target logs any).
    steps: BTreeMap<u64, BTreeSet<u64>>,
}

impl Model {
    /// The highest step of `run`'s stitched view up to `limit`: its own
    /// points after its fork step, its parent's (recursively) up to it.
    fn view_max(&self, run: u64, limit: u64) -> Option<u64> {
        let (_, fork) = &self.runs[&run];
        let from = fork.map_or(0, |(_, at)| at.saturating_add(1));
        let own = (from <= limit)
            .then(|| self.steps.get(&run))
            .flatten()
            .and_then(|s| s.range(from..=limit).next_back().copied());
        let inherited = fork.and_then(|(parent, at)| self.view_max(parent, limit.min(at)));
        own.max(inherited)
    }

    /// The run whose own point `step` of `run`'s view is: a fork's parent up
    /// to the fork step, recursively.
    fn owner(&self, mut run: u64, step: u64) -> u64 {
        loop {
            match self.runs[&run].1 {
                Some((parent, at)) if step <= at => run = parent,
                _ => return run,
            }
        }
    }

    fn next_id(&self) -> u64 {
        self.runs.keys().next_back().map_or(1, |id| id + 1)
    }
}

/// What the server must do with a request.
#[derive(Debug, PartialEq)]
enum Expected {
    Refused,
    /// Stores `rows` rows (values or lines) at these steps of the target.
    Stored {
        rows: i64,
        steps: Vec<u64>,
    },
    /// Creates this run.
    Run {
        id: u64,
        project: String,
        fork: Option<(u64, u64)>,
    },
}

impl Model {
    fn expect(&self, route: usize, lines: &[Line]) -> Expected {
        if lines
            .iter()
            .flat_map(Line::tokens)
            .any(|t| t.kind == Kind::Broken)
        {
            return Expected::Refused;
        }
        let (mut rows, mut steps) = (0, Vec::new());
        for line in lines {
            match (route, line) {
                (0, Line::Metrics { time, step, data }) => {
                    let (true, Some(step)) = (time.time_ok(), step.step_ok()) else {
                        return Expected::Refused;
                    };
                    // Of a name given twice, the last value counts.
                    let mut last: Vec<&(String, Tok)> = Vec::new();
                    for pair in data {
                        last.retain(|(k, _)| *k != pair.0);
                        last.push(pair);
                    }
                    for (name, value) in last {
                        match reading(value) {
                            Reading::Null => {}
                            Reading::Refused => return Expected::Refused,
                            Reading::Number if !named(name) => return Expected::Refused,
                            Reading::Number => {
                                rows += 1;
                                steps.push(step);
                            }
                        }
                    }
                }
                (1, Line::Log { time, .. }) => {
                    if !time.time_ok() {
                        return Expected::Refused;
                    }
                    rows += 1;
                }
                (2, Line::Data { time, step, .. }) => {
                    if !time.time_ok() || step.step_ok().is_none() {
                        return Expected::Refused;
                    }
                    rows += 1;
                }
                (
                    3,
                    Line::Create {
                        project,
                        run,
                        tags,
                        fork,
                        ..
                    },
                ) => {
                    if !named(project) || !named(run) || !tags.iter().all(|t| named(t)) {
                        return Expected::Refused;
                    }
                    let id = self.next_id();
                    // A null forkRunId or forkStep is an absent one.
                    let fork = fork.as_ref().map(|(r, s)| {
                        (
                            (r.kind != Kind::Null).then_some(r),
                            (s.kind != Kind::Null).then_some(s),
                        )
                    });
                    return match fork {
                        None | Some((None, None)) => Expected::Run {
                            id,
                            project: project.clone(),
                            fork: None,
                        },
                        Some((Some(forked), Some(at))) => {
                            let forked =
                                forked.non_negative().filter(|r| self.runs.contains_key(r));
                            let (Some(forked), Some(at)) = (forked, at.non_negative()) else {
                                return Expected::Refused;
                            };
                            let same_project = self.runs[&forked].0 == *project;
                            match self.view_max(forked, u64::MAX) {
                                Some(max) if same_project && at <= max => Expected::Run {
                                    id,
                                    project: project.clone(),
                                    fork: Some((self.owner(forked, at), at)),
                                },
                                _ => Expected::Refused,
                            }
                        }
                        Some(_) => Expected::Refused,
                    };
                }
                _ => unreachable!("a line of another route"),
            }
        }
        Expected::Stored { rows, steps }
    }
}

struct Target {
    server: common::Server,
    client: reqwest::Client,
    model: std::sync::Mutex<Model>,
    /// Accepted and refused requests per route, modelled or not, so a
    /// generator that only ever produces refusals (or acceptances) is noticed.
    outcomes: std::sync::Mutex<[[[usize; 2]; 2]; 4]>,
    /// The first case that failed (shrinking runs more cases on the same
    /// server, whose state the first failure may have left unmodelled).
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Target {
    async fn sql(&self, sql: &str) -> Value {
        self.client
            .post(format!("{}/api/sql", self.server.base))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Rows of every table a write route adds to, in one query.
    async fn counts(&self) -> Vec<i64> {
        let rows = self
            .sql(
                "SELECT (SELECT count(*) FROM metric_writes) AS m, (SELECT count(*) FROM logs) AS l, \
                 (SELECT count(*) FROM data) AS d, (SELECT count(*) FROM runs) AS r",
            )
            .await;
        ["m", "l", "d", "r"]
            .iter()
            .map(|k| rows[0][k].as_i64().unwrap())
            .collect()
    }

    /// The target's steps as the store has them, after a write the test did not model.
    async fn resync_steps(&self) {
        let rows = self
            .sql(&format!(
                "SELECT DISTINCT step FROM metrics WHERE run_id = {TARGET}"
            ))
            .await;
        let steps = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        self.model.lock().unwrap().steps.insert(TARGET, steps);
    }

    async fn check(&self, route: usize, body: Body) -> Result<(), TestCaseError> {
        let result = self.check_inner(route, &body).await;
        if let Err(e) = &result {
            self.first_failure
                .lock()
                .unwrap()
                .get_or_insert_with(|| format!("{e}"));
        }
        result
    }

    async fn check_inner(&self, route: usize, body: &Body) -> Result<(), TestCaseError> {
        let (bytes, expected) = match body {
            Body::Lines(lines) => (
                render(lines),
                Some(self.model.lock().unwrap().expect(route, lines)),
            ),
            Body::Mutated(bytes) => (bytes.clone(), None),
        };
        let before = self.counts().await;
        let resp = self
            .client
            .post(format!("{}{}", self.server.base, ROUTES[route]))
            .header("x-run-id", TARGET.to_string())
            .header("content-type", "application/x-ndjson")
            .body(bytes.clone())
            .send()
            .await
            .map_err(|e| TestCaseError::fail(format!("no answer (server down?): {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let reply: Value = serde_json::from_str(&text)
            .map_err(|_| TestCaseError::fail(format!("{status}: not JSON: {text}")))?;
        let after = self.counts().await;
        let added: Vec<i64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let shown = String::from_utf8_lossy(&bytes);
        let accepted = match status {
            200..=299 => true,
            400..=499 => false,
            _ => {
                return Err(TestCaseError::fail(format!(
                    "{status} for {} {shown:?}: {reply}",
                    ROUTES[route]
                )));
            }
        };
        self.outcomes.lock().unwrap()[route][usize::from(expected.is_none())]
            [usize::from(!accepted)] += 1;
        let context = format!("{} {shown:?}: {status} {reply}", ROUTES[route]);
        if !accepted {
            prop_assert!(reply["error"].is_string(), "{}", context);
            prop_assert_eq!(&after, &before, "refused but committed: {}", context);
        }
        let mut in_table = [0i64; 4];
        match expected {
            // Not modelled: what the answer says was stored, was.
            None => {
                if accepted {
                    if route == 3 {
                        in_table[3] = 1;
                        let fork = reply["forkedFromRunId"]
                            .as_u64()
                            .zip(reply["forkStep"].as_u64());
                        let run = (reply["projectName"].as_str().unwrap().to_string(), fork);
                        let id = reply["runId"].as_u64().unwrap();
                        self.model.lock().unwrap().runs.insert(id, run);
                    } else {
                        in_table[route] = reply["stored"].as_i64().unwrap();
                        if route == 0 {
                            self.resync_steps().await;
                        }
                    }
                    prop_assert_eq!(added, in_table.to_vec(), "{}", context);
                }
            }
            Some(Expected::Refused) => {
                prop_assert!(!accepted, "accepted, expected a refusal: {}", context);
            }
            Some(Expected::Stored { rows, steps }) => {
                prop_assert!(accepted, "refused, expected {} rows: {}", rows, context);
                prop_assert_eq!(reply["stored"].as_i64(), Some(rows), "{}", context);
                in_table[route] = rows;
                prop_assert_eq!(added, in_table.to_vec(), "{}", context);
                let mut model = self.model.lock().unwrap();
                model.steps.entry(TARGET).or_default().extend(steps);
            }
            Some(Expected::Run { id, project, fork }) => {
                prop_assert!(accepted, "refused, expected run {}: {}", id, context);
                prop_assert_eq!(reply["runId"].as_u64(), Some(id), "{}", context);
                prop_assert_eq!(reply["projectName"].as_str(), Some(project.as_str()));
                prop_assert_eq!(
                    (
                        reply["forkedFromRunId"].as_u64(),
                        reply["forkStep"].as_u64()
                    ),
                    (fork.map(|f| f.0), fork.map(|f| f.1)),
                    "{}",
                    context
                );
                prop_assert_eq!(added, vec![0, 0, 0, 1], "{}", context);
                self.model.lock().unwrap().runs.insert(id, (project, fork));
            }
        }
        Ok(())
    }
}

#[test]
fn random_write_requests_get_2xx_or_4xx_and_refusals_commit_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_dir, store) = temp_store();
    let server = spawn_server_with(&store, &["--commit-window-ms", "1"]);
    let client = reqwest::Client::new();
    let created: Value = runtime.block_on(async {
        client
            .post(format!("{}/api/runs/create", server.base))
            .json(&json!({"projectName": "fuzz", "runName": "target"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(created["runId"].as_u64(), Some(TARGET), "{created}");
    let mut model = Model::default();
    model.runs.insert(TARGET, ("fuzz".into(), None));
    let target = Target {
        server,
        client,
        model: std::sync::Mutex::new(model),
        outcomes: Default::default(),
        first_failure: Default::default(),
    };
    let mut runner = TestRunner::new(Config {
        cases: 160,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = (0..ROUTES.len()).prop_flat_map(|r| (Just(r), body(r)));
    let result = runner.run(&cases, |(route, body)| {
        runtime.block_on(target.check(route, body))
    });
    if let Err(e) = result {
        panic!(
            "{e}\nfirst failure: {}",
            target
                .first_failure
                .lock()
                .unwrap()
                .as_deref()
                .unwrap_or("")
        );
    }
    let health = runtime
        .block_on(reqwest::get(format!("{}/health", target.server.base)))
        .unwrap();
    assert_eq!(health.status(), 200);
    let outcomes = target.outcomes.lock().unwrap();
    eprintln!(
        "[[accepted, refused] modelled, [accepted, refused] mutated] per route {ROUTES:?}: {outcomes:?}"
    );
    for (route, [[accepted, refused], _]) in ROUTES.iter().zip(outcomes.iter()) {
        assert!(
            *accepted > 0 && *refused > 0,
            "{route}: of the modelled requests {accepted} accepted, {refused} refused"
        );
    }
    let forks = target
        .model
        .lock()
        .unwrap()
        .runs
        .values()
        .filter(|(_, fork)| fork.is_some())
        .count();
    eprintln!("forks created: {forks}");
}
