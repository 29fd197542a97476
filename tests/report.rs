//! `forkline report` and `GET /api/report`: numbers against an independent SQL
//! computation, snapshots of the JSON and Markdown, HTTP scoping and errors,
//! and the HTML rendered in headless Chromium.

mod common;

use std::path::{Path, PathBuf};

use common::{chromium_or_skip, cli, product_docs, spawn_server, spawn_server_with, temp_store};
use forkline::Engine;
use serde_json::Value;

async fn fixture() -> (tempfile::TempDir, String) {
    let (dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    product_docs(&engine).await.unwrap();
    (dir, store)
}

/// The report's numbers for every run of `family` and `metric`, computed
/// independently: plain SQL over `family_metrics` / `family_runs` (each run's
/// stitched series as the table function gives it), no Rust arithmetic.
/// Columns: run_id, last_step, last_value, best_value, best_step,
/// last_common_step, delta_last_common, delta_at_last, area_after_fork, rank.
fn oracle_sql(family: &str, metric: &str, goal: &str) -> String {
    let (agg, order) = if goal == "max" {
        ("max", "DESC")
    } else {
        ("min", "ASC")
    };
    format!(
        "WITH s AS (SELECT run_id, step, value FROM family_metrics('{family}', '{metric}') WHERE NOT isnan(value)),
        f AS (SELECT run_id, parent_id, fork_step FROM family_runs('{family}')),
        last AS (SELECT s.run_id, s.step, s.value FROM s
                 JOIN (SELECT run_id, max(step) AS step FROM s GROUP BY run_id) m
                 ON s.run_id = m.run_id AND s.step = m.step),
        best AS (SELECT run_id, {agg}(value) AS value FROM s GROUP BY run_id),
        best_step AS (SELECT s.run_id, min(s.step) AS step FROM s
                      JOIN best b ON s.run_id = b.run_id AND s.value = b.value GROUP BY s.run_id),
        pairs AS (SELECT c.run_id, c.step, c.value - p.value AS d, f.fork_step FROM s c
                  JOIN f ON c.run_id = f.run_id JOIN s p ON p.run_id = f.parent_id AND p.step = c.step),
        lc AS (SELECT pairs.run_id, pairs.step, pairs.d FROM pairs
               JOIN (SELECT run_id, max(step) AS step FROM pairs GROUP BY run_id) m
               ON pairs.run_id = m.run_id AND pairs.step = m.step),
        at_last AS (SELECT l.run_id, max(p.step) AS pstep FROM last l JOIN f ON l.run_id = f.run_id
                    JOIN s p ON p.run_id = f.parent_id AND p.step <= l.step GROUP BY l.run_id),
        at_last_delta AS (SELECT a.run_id, l.value - p.value AS d FROM at_last a
                          JOIN last l ON a.run_id = l.run_id JOIN f ON a.run_id = f.run_id
                          JOIN s p ON p.run_id = f.parent_id AND p.step = a.pstep),
        after AS (SELECT run_id, step, d,
                         lead(step) OVER (PARTITION BY run_id ORDER BY step) AS nstep,
                         lead(d) OVER (PARTITION BY run_id ORDER BY step) AS nd
                  FROM pairs WHERE step > fork_step),
        area AS (SELECT run_id, sum((d + nd) / 2.0 * CAST(nstep - step AS DOUBLE)) AS area, count(*) AS n
                 FROM after GROUP BY run_id),
        ranked AS (SELECT run_id, rank() OVER (ORDER BY value {order}) AS rank FROM best)
        SELECT f.run_id, l.step, l.value, b.value, bs.step, lc.step, lc.d, ad.d,
               CASE WHEN ar.n >= 2 THEN ar.area END, r.rank
        FROM f LEFT JOIN last l ON f.run_id = l.run_id
        LEFT JOIN best b ON f.run_id = b.run_id
        LEFT JOIN best_step bs ON f.run_id = bs.run_id
        LEFT JOIN lc ON f.run_id = lc.run_id
        LEFT JOIN at_last_delta ad ON f.run_id = ad.run_id
        LEFT JOIN area ar ON f.run_id = ar.run_id
        LEFT JOIN ranked r ON f.run_id = r.run_id
        ORDER BY f.run_id"
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Compares the JSON rows of (`family`, `metric`) with the oracle, run by run.
async fn check_against_sql(engine: &Engine, report: &Value, family: &str, metric: &str) -> usize {
    let section = report["families"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["root"] == family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let table = section["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == metric)
        .unwrap_or_else(|| panic!("no metric {metric} in {family}"));
    let goal = table["goal"].as_str().unwrap();
    let expected = common::rows(engine, &oracle_sql(family, metric, goal))
        .await
        .unwrap();
    let runs = table["runs"].as_array().unwrap();
    assert_eq!(
        runs.len(),
        expected.len(),
        "{family} {metric}: one row per run"
    );
    let by_id = |id: &str| {
        runs.iter()
            .find(|r| r["run_id"].as_u64() == id.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("run {id} missing from the report"))
    };
    let fields = [
        "last_step",
        "last_value",
        "best_value",
        "best_step",
        "last_common_step",
        "delta_last_common",
        "delta_at_last",
        "area_after_fork",
        "rank",
    ];
    for row in &expected {
        let got = by_id(&row[0]);
        for (field, want) in fields.iter().zip(&row[1..]) {
            let have = &got[*field];
            if want == "NULL" {
                assert!(
                    have.is_null(),
                    "{family} {metric} run {} {field}: {have} vs NULL",
                    row[0]
                );
            } else {
                let w: f64 = want.parse().unwrap();
                let h = have.as_f64().unwrap_or_else(|| {
                    panic!(
                        "{family} {metric} run {} {field} is {have}, SQL says {want}",
                        row[0]
                    )
                });
                assert!(
                    close(h, w),
                    "{family} {metric} run {} {field}: report {h}, SQL {w}",
                    row[0]
                );
            }
        }
    }
    // The winner is the rank-1 run with the smallest id.
    let winner = runs
        .iter()
        .filter(|r| r["rank"] == 1)
        .min_by_key(|r| r["run_id"].as_u64())
        .map(|r| r["display_id"].clone());
    assert_eq!(winner.unwrap_or(Value::Null), table["winner"]);
    assert_eq!(
        runs.iter().filter(|r| r["winner"] == true).count(),
        usize::from(!table["winner"].is_null())
    );
    expected.len()
}

fn report_json(store: &str, args: &[&str]) -> Value {
    let mut all = vec!["report", "--format", "json"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(store, &all);
    assert!(ok, "report failed: {err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn product_docs_numbers_match_sql() {
    let (_dir, store) = fixture().await;
    let report = report_json(
        &store,
        &[
            "--project",
            "product-docs",
            "--family",
            "PD-3",
            "--metrics",
            "loss,acc",
            "--goal",
            "loss=min,acc=max",
        ],
    );
    let engine = Engine::open(&store).await.unwrap();
    assert_eq!(check_against_sql(&engine, &report, "PD-1", "loss").await, 3);
    assert_eq!(check_against_sql(&engine, &report, "PD-1", "acc").await, 3);

    // Hand-checked against the product docs' lineage (A → B at 50 → C at 150):
    let loss = &report["families"][0]["metrics"][0];
    let c = &loss["runs"][2];
    assert_eq!(c["display_id"], "PD-3");
    assert_eq!(c["parent"], "PD-2");
    // C's last point is 2180 at 180; B's series at 180 is 1180.
    assert_eq!(c["last_value"], 2180.0);
    assert_eq!(c["delta_last_common"], 1000.0);
    assert_eq!(c["last_common_step"], 180);
    // Steps 151..=180 in both, difference 1000 throughout: 29 step-units × 1000.
    assert_eq!(c["area_after_fork"], 29_000.0);
    // B's re-logged -1 at steps 40..=50 are hidden from its stitched view: its best is A's 0.
    assert_eq!(loss["runs"][1]["best_value"], 0.0);
    assert_eq!(loss["runs"][1]["best_step"], 0);
    // acc: only A logs it; B and C inherit 0..=50 and have nothing after their forks.
    let acc = &report["families"][0]["metrics"][1];
    assert_eq!(acc["goal"], "max");
    assert_eq!(acc["winner"], "PD-1");
    assert_eq!(acc["runs"][1]["last_value"], 0.5);
    assert!(acc["runs"][1]["area_after_fork"].is_null());
}

#[tokio::test]
async fn demo_store_all_families_match_sql() {
    let (_dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    forkline::fixtures::demo::build(&engine, 7).await.unwrap();
    let report = report_json(
        &store,
        &[
            "--project",
            "vision-sweep",
            "--all-families",
            "--metrics",
            "train/*,val/loss",
        ],
    );
    let roots: Vec<&str> = report["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["root"].as_str().unwrap())
        .collect();
    assert_eq!(roots, ["VS-1", "VS-10"]);
    let names: Vec<&str> = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"train/loss") && names.contains(&"val/loss"),
        "{names:?}"
    );
    let mut checked = 0;
    for family in roots {
        for metric in ["train/loss", "val/loss"] {
            checked += check_against_sql(&engine, &report, family, metric).await;
        }
    }
    assert_eq!(checked, 2 * (9 + 5));
}

#[tokio::test]
async fn json_markdown_and_csv_snapshots() {
    let (_dir, store) = fixture().await;
    let args = [
        "--project",
        "product-docs",
        "--all-families",
        "--metrics",
        "loss,acc,missing",
        "--goal",
        "min,acc=max",
    ];
    // tests/snapshots/report__product_docs_{json,md,csv}.snap; a change
    // fails here and leaves a `.snap.new` to review (`INSTA_UPDATE=always`
    // rewrites them; with `CI=true` insta writes nothing).
    for format in ["json", "md", "csv"] {
        let mut all = vec!["report", "--format", format];
        all.extend_from_slice(&args);
        let (ok, out, err) = cli(&store, &all);
        assert!(ok, "{err}");
        insta::assert_snapshot!(format!("product_docs_{format}"), out);
    }
}

#[tokio::test]
async fn http_answers_the_cli_json_scoped_by_key() {
    let (dir, store) = fixture().await;
    // A second project, to check that a key never reaches it.
    let engine = Engine::open(&store).await.unwrap();
    let other = engine
        .create_run(forkline::catalog::NewRun {
            project: "other".into(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    engine
        .write_points(
            &other.display_id,
            vec![forkline::ingest::MetricPoint::new("loss", 0, 1.0)],
        )
        .await
        .unwrap();
    drop(engine);
    let cli_json = report_json(
        &store,
        &[
            "--project",
            "product-docs",
            "--family",
            "PD-2",
            "--metrics",
            "loss",
        ],
    );

    let client = reqwest::Client::new();
    {
        let server = spawn_server(&store);
        let url = format!(
            "{}/api/report?project=product-docs&family=PD-2&metrics=loss&format=json",
            server.base
        );
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let http_json: Value = resp.json().await.unwrap();
        assert_eq!(http_json, cli_json);

        for (query, status, needle) in [
            (
                "project=nope&all_families=true&metrics=loss",
                404,
                "unknown project",
            ),
            ("project=product-docs&all_families=true", 400, "metric"),
            ("project=product-docs&metrics=loss", 400, "family"),
            (
                "project=product-docs&family=OTH-1&metrics=loss",
                400,
                "belongs to project",
            ),
            (
                "project=product-docs&family=PD-9&metrics=loss",
                404,
                "unknown run",
            ),
            (
                "project=product-docs&all_families=true&metrics=loss&goal=best",
                400,
                "goal",
            ),
            (
                "project=product-docs&all_families=true&metrics=loss&format=pdf",
                400,
                "format",
            ),
            (
                "project=product-docs&all_families=true&metrics=nothing*",
                400,
                "no metric",
            ),
        ] {
            let resp = client
                .get(format!("{}/api/report?{query}", server.base))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status, "{query}");
            let body: Value = resp.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains(needle),
                "{query}: {body}"
            );
        }
        let html = client
            .get(format!(
                "{}/api/report?project=product-docs&all_families=true&metrics=loss",
                server.base
            ))
            .send()
            .await
            .unwrap();
        assert!(
            html.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(html.text().await.unwrap().contains("<svg"));
    }

    // With keys, a key for `other` cannot see product-docs at all.
    let (ok, key, err) = cli(&store, &["keys", "create", "--project", "other"]);
    assert!(ok, "{err}");
    let server = spawn_server_with(&store, &[]);
    let resp = client
        .get(format!(
            "{}/api/report?project=product-docs&all_families=true&metrics=loss&format=json",
            server.base
        ))
        .bearer_auth(key.trim())
        .send()
        .await
        .unwrap();
    // A project named in the query must lie inside the key's scope.
    assert_eq!(resp.status(), 403);
    let resp = client
        .get(format!(
            "{}/api/report?project=other&all_families=true&metrics=loss&format=json",
            server.base
        ))
        .bearer_auth(key.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["families"][0]["root"], other.display_id);
    drop(dir);
}

#[tokio::test]
async fn cli_errors_write_nothing() {
    let (dir, store) = fixture().await;
    let out = dir.path().join("r.html");
    let out_s = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--project", "nope", "--all-families", "--metrics", "loss"],
            "unknown project",
        ),
        (
            vec![
                "--project",
                "product-docs",
                "--all-families",
                "--metrics",
                " , ",
            ],
            "metric",
        ),
        (
            vec![
                "--project",
                "product-docs",
                "--all-families",
                "--metrics",
                "loss",
                "--goal",
                "up",
            ],
            "goal",
        ),
        (
            vec![
                "--project",
                "product-docs",
                "--family",
                "PD-7",
                "--metrics",
                "loss",
            ],
            "unknown run",
        ),
    ] {
        let mut all = vec!["report", "-o", out_s];
        all.extend(args);
        let (ok, _, err) = cli(&store, &all);
        assert!(!ok, "{all:?} should fail");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let (ok, _, err) = cli(
        &store,
        &["report", "--project", "product-docs", "--metrics", "loss"],
    );
    assert!(!ok && err.contains("--family"), "{err}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("r.html")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let (ok, _, err) = cli(
        &store,
        &[
            "report",
            "--project",
            "product-docs",
            "--all-families",
            "--metrics",
            "loss",
            "-o",
            out_s,
        ],
    );
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("id=\"family-pd-1\""));
    for asset in ["<script", "<link", "<img", "src=", "@import", "url("] {
        assert!(!html.contains(asset), "no external assets: found {asset}");
    }
}

fn run_chromium(bin: &Path, profile: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

/// Opens the demo store's HTML report in headless Chromium and checks the
/// rendered DOM: one SVG chart per (family, metric), each with non-empty line
/// paths. `SCREENSHOT_TO=docs/report-family.png` also saves a screenshot of the
/// first family section for the README and `docs/reports.md`.
#[tokio::test]
async fn html_renders_in_headless_chromium() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let (dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    forkline::fixtures::demo::build(&engine, 7).await.unwrap();
    let page = dir.path().join("report.html");
    let (ok, _, err) = cli(
        &store,
        &[
            "report",
            "--project",
            "vision-sweep",
            "--family",
            "VS-1",
            "--family",
            "VS-10",
            "--metrics",
            "train/loss,val/loss",
            "-o",
            page.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.len() < 2 << 20,
        "charts are downsampled: {} bytes",
        html.len()
    );

    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let out = run_chromium(&bin, profile.path(), &["--dump-dom", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    // The serialized DOM is what the browser parsed: count charts and their paths there.
    let charts = dom.matches("<div class=\"chart\"><svg").count();
    assert_eq!(charts, 4, "two families × two metrics");
    for chart in dom.split("<div class=\"chart\">").skip(1) {
        let svg = &chart[..chart.find("</svg>").expect("closed svg")];
        let paths: Vec<&str> = svg
            .match_indices("<polyline")
            .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap()])
            .collect();
        let points = |p: &str| -> usize {
            p.split("points=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map_or(0, |pts| pts.split_whitespace().count())
        };
        let lines = paths.iter().filter(|p| points(p) >= 3).count();
        assert!(
            lines >= 5,
            "a line per run at least: {lines} polylines of 3+ points"
        );
        // Fork steps: one vertical dashed line each, in its run's colour.
        let forks: Vec<&str> = svg
            .match_indices("<line ")
            .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap()])
            .filter(|l| l.contains("stroke-dasharray"))
            .collect();
        assert!(forks.len() >= 4, "dashed fork lines: {forks:?}");
        for line in &forks {
            let attr = |name: &str| {
                line.split(&format!(" {name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
            };
            assert_eq!(attr("x1"), attr("x2"), "a fork line is vertical: {line}");
            assert!(
                !line.contains("stroke=\"#000000\""),
                "in a run's colour: {line}"
            );
        }
    }
    assert!(dom.contains("id=\"family-vs-1\"") && dom.contains("href=\"#family-vs-10\""));

    let shot = dir.path().join("shot.png");
    let out = run_chromium(
        &bin,
        profile.path(),
        &[
            "--window-size=1400,1500",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot: {} bytes",
        png.len()
    );
    if let Some(target) = std::env::var_os("SCREENSHOT_TO") {
        std::fs::copy(&shot, Path::new(env!("CARGO_MANIFEST_DIR")).join(target)).unwrap();
    }
}

/// A small bench-data store (every bench metric, several families) written in
/// `commits` commits.
async fn small_bench_store(seed: u64, commits: u64) -> (tempfile::TempDir, String) {
    use forkline::fixtures::bench_data::{self, BenchSpec};
    let (dir, store) = temp_store();
    let engine = Engine::open(&store).await.unwrap();
    let spec = BenchSpec {
        scale: 0.004,
        seed,
        commits: Some(commits),
        compact_every: None,
    };
    bench_data::run(&engine, &spec).await.unwrap();
    (dir, store)
}

/// A report of `metrics` over every family of the bench project.
fn bench_report(metrics: &str) -> forkline::report::ReportRequest {
    forkline::report::ReportRequest {
        project: forkline::fixtures::bench_data::PROJECT.to_string(),
        families: Vec::new(),
        all_families: true,
        metrics: vec![metrics.to_string()],
        goals: forkline::report::Goals::parse(Some("min,*acc*=max")).unwrap(),
    }
}

/// A report of many metrics reads them a few to a scan of each family; every
/// metric's section, numbers and drawing, must be what a report of that
/// metric alone computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scanned_together_match_one_metric_reports() {
    use forkline::fixtures::bench_data;
    use forkline::report;
    use forkline::scope::Projects;

    let (_dir, store) = small_bench_store(11, 3).await;
    let engine = Engine::open(&store).await.unwrap();
    let request = bench_report;
    let all = report::build(
        &engine,
        &request("*"),
        &Projects::All,
        &|_: report::Progress| {},
    )
    .await
    .unwrap();
    assert_eq!(all.metrics.len(), bench_data::METRICS.len());
    assert!(all.families.iter().all(|f| f.size > 1));
    for (i, metric) in all.metrics.iter().enumerate() {
        let one = report::build(
            &engine,
            &request(&metric.name),
            &Projects::All,
            &|_: report::Progress| {},
        )
        .await
        .unwrap();
        assert_eq!(one.families.len(), all.families.len());
        for (together, alone) in all.families.iter().zip(&one.families) {
            let (together, alone) = (&together.metrics[i], &alone.metrics[0]);
            assert_eq!(together.metric, metric.name);
            assert_eq!(
                serde_json::to_value(together).unwrap(),
                serde_json::to_value(alone).unwrap(),
                "{}",
                metric.name
            );
            assert_eq!(
                format!("{:?}", together.series),
                format!("{:?}", alone.series)
            );
            assert!(together.series.iter().any(|s| !s.is_empty()));
        }
    }
}

/// A family whose owner series of every metric exceed the memory pool is
/// read in smaller scans, with the same report; a pool too small for one
/// metric's series fails with "resources exhausted", not a process grown past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tight_memory_pool_splits_the_scans_with_the_same_report() {
    use forkline::EngineOptions;
    use forkline::error::ErrorKind;
    use forkline::report::{self, Progress};
    use forkline::scope::Projects;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (_dir, store) = small_bench_store(5, 4).await;
    // Compacted, the scans are plain reads: the pool then holds the
    // report's series alone, not also last-write-wins over ingest files.
    let (ok, _, err) = cli(&store, &["compact"]);
    assert!(ok, "{err}");
    let request = bench_report("*");
    let build = |engine: Engine| {
        let request = request.clone();
        async move {
            let scans = AtomicUsize::new(0);
            let count = |p: Progress| {
                if let Progress::Scan { rows: 0, .. } = p {
                    scans.fetch_add(1, Ordering::Relaxed);
                }
            };
            let built = report::build(&engine, &request, &Projects::All, &count).await;
            (built, scans.into_inner())
        }
    };
    let (roomy, roomy_scans) = build(Engine::open(&store).await.unwrap()).await;
    let roomy = roomy.unwrap();
    assert_eq!(roomy_scans, roomy.families.len(), "one scan per family");
    // The largest family's owner points, 16 bytes each: a pool of a third
    // of that cannot hold every metric at once.
    let biggest = forkline::report::series::OwnerSeries::BYTES_PER_POINT
        * roomy
            .families
            .iter()
            .map(|f| {
                f.metrics
                    .iter()
                    .flat_map(|m| m.runs.iter().filter(|r| r.parent.is_none()))
                    .map(|r| r.stats.points + r.stats.non_finite)
                    .sum::<usize>()
            })
            .max()
            .unwrap();
    let tight = |memory_limit| EngineOptions {
        memory_limit,
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(&store, tight(biggest / 3)).await.unwrap();
    let (split, split_scans) = build(engine).await;
    let split = split.unwrap();
    assert!(split_scans > roomy_scans, "{split_scans} scans");
    assert_eq!(
        serde_json::to_value(&split.families).unwrap(),
        serde_json::to_value(&roomy.families).unwrap()
    );
    let series = |r: &report::Report| {
        r.families
            .iter()
            .flat_map(|f| f.metrics.iter().map(|m| format!("{:?}", m.series)))
            .collect::<Vec<_>>()
    };
    assert_eq!(series(&split), series(&roomy));

    let engine = Engine::open_with(&store, tight(4096)).await.unwrap();
    let Err(error) = build(engine).await.0 else {
        panic!("a 4 KiB pool fails");
    };
    assert_eq!(error.kind(), ErrorKind::ResourcesExhausted, "{error}");
    assert!(error.to_string().contains("--memory-mb"), "{error}");
}
