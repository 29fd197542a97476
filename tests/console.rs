//! The web console against a real `forkline serve` on the demo store, in
//! headless Chromium: project → family → run by the links each page shows,
//! the fork tree and the charts against SQL answers over `/api/sql`, zoom,
//! toggles, several metrics, compare, the SQL page and its Parquet
//! download, key scopes, page weight, and `--no-console`.

#[path = "console/browser.rs"]
mod browser;
mod common;
#[path = "console/oracle.rs"]
mod oracle;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use browser::{chromium_or_skip, dom, downloads, screenshot};
use common::{spawn_server, spawn_server_with, temp_store};
use oracle::{
    Console, attr, chart_of, chart_oracle, charts_of, demo, href, number, tags, urlencode,
};
use serde_json::json;

fn family_source(metric: &str) -> String {
    format!("family_metrics('VS-1', '{metric}')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn navigate_the_demo_store() {
    let (_dir, _server, c, lm_key) = demo().await;

    // The shell: public, self-contained, and the first page's weight.
    let mut weight = 0;
    for path in ["/", "/console/console.js", "/console/console.css"] {
        let response = reqwest::get(format!("{}{path}", c.base)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        let body = response.text().await.unwrap();
        for external in ["http://", "https://", "//fonts.", "cdn"] {
            assert!(!body.contains(external), "{path} refers to {external}");
        }
        weight += body.len();
    }
    let (status, projects) = c.get("/api/console/p", Some(&c.key)).await;
    assert_eq!(status, 200);
    weight += projects.len();
    println!("console first page: {weight} bytes (shell, script, style, project list)");
    assert!(weight <= 200 << 10, "first page {weight} bytes");

    // Data routes need a key; another project's key sees none of vision-sweep.
    let (status, _) = c.get("/api/console/p", None).await;
    assert_eq!(status, 401);
    let (status, text) = c.get("/api/console/p", Some(&lm_key)).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("lm-pretrain") && !text.contains("vision-sweep"),
        "{text}"
    );
    for path in [
        "/api/console/p/vision-sweep",
        "/api/console/p/vision-sweep/f/VS-1?metric=train/loss",
        "/api/console/p/vision-sweep/r/VS-6",
        "/api/console/p/vision-sweep/compare?runs=VS-6,VS-12",
    ] {
        let (status, text) = c.get(path, Some(&lm_key)).await;
        assert_eq!(status, 403, "{path}: {text}");
        assert!(!text.contains("VS-"), "{path}: {text}");
    }
    for path in [
        "/api/console/p/lm-pretrain/f/VS-1",
        "/api/console/p/lm-pretrain/r/VS-6",
        "/api/console/p/lm-pretrain/compare?runs=VS-6",
    ] {
        let (status, text) = c.get(path, Some(&lm_key)).await;
        assert_eq!(status, 404, "{path}: {text}");
    }
    for bad in ["from=9&to=3", "axis=cubic", "inherited=maybe"] {
        let path = format!("/api/console/p/vision-sweep/f/VS-1?{bad}");
        let (status, text) = c.get(&path, Some(&c.key)).await;
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(text.contains("\"error\""), "{text}");
    }

    // A file of VS-6, for its run page.
    let vs6 = c.sql("SELECT id FROM runs WHERE display_id = 'VS-6'").await[0]["id"].to_string();
    let spec = json!({"files": [{"fileName": "confusion.png", "fileSize": 3, "fileType": "png", "time": 1, "logName": "eval", "step": 40}]});
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/files", c.base))
        .bearer_auth(&c.key)
        .header("x-run-id", &vs6)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let urls: serde_json::Value = response.json().await.unwrap();
    let upload = urls["eval"][0]["confusion.png"].as_str().unwrap();
    let put = client.put(upload).body("abc").send().await.unwrap();
    assert_eq!(put.status(), 200);

    // The chart as the server renders it, timed.
    let started = Instant::now();
    let (status, fragment) = c
        .get(
            "/api/console/p/vision-sweep/f/VS-1?metric=train/loss&width=1000",
            Some(&c.key),
        )
        .await;
    assert_eq!(status, 200, "{fragment}");
    println!(
        "family chart VS-1 train/loss: rendered by the server in {:.0} ms, {} bytes",
        started.elapsed().as_secs_f64() * 1e3,
        fragment.len()
    );

    let Some(bin) = chromium_or_skip() else {
        return;
    };

    // Projects → project: the links each page shows.
    let home = c.page(&bin, "/");
    let body = tags(&home, "<body")[0];
    let transferred = number(body, "data-transfer-bytes");
    println!("console first page in the browser: {transferred} bytes transferred");
    assert!(transferred > 0 && transferred <= 200 << 10, "{transferred}");
    let counts = c
        .sql("SELECT project, count(*) AS n FROM runs GROUP BY project")
        .await;
    for row in &counts {
        let project = row["project"].as_str().unwrap();
        let n = row["n"].as_u64().unwrap();
        assert!(
            home.contains(&format!("data-project=\"{project}\" data-runs=\"{n}\"")),
            "{project}: {n} runs in {home}"
        );
    }
    let project_url = href(&home, ">vision-sweep<");
    assert_eq!(project_url, "/p/vision-sweep");
    let project = c.page(&bin, &project_url);
    let family_url = href(&project, ">VS-1<");
    assert_eq!(family_url, "/p/vision-sweep/f/VS-1");

    // Family: the tree has every run with its parent and fork step.
    let family = c.page(&bin, &format!("{family_url}?metric=train/loss"));
    let tree: BTreeSet<(String, String, String)> = tags(&family, "<li data-run=")
        .into_iter()
        .map(|li| {
            (
                attr(li, "data-run").unwrap(),
                attr(li, "data-parent").unwrap(),
                attr(li, "data-fork-step").unwrap(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = c
        .sql(
            "SELECT f.display_id, coalesce(p.display_id, '') AS parent, \
             coalesce(CAST(f.fork_step AS VARCHAR), '') AS fork_step \
             FROM family_runs('VS-1') f LEFT JOIN runs p ON p.id = f.parent_id",
        )
        .await
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap().to_string();
            (text("display_id"), text("parent"), text("fork_step"))
        })
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    assert_eq!(tree, expected);
    let running = c
        .sql("SELECT display_id FROM family_runs('VS-1') WHERE status = 'RUNNING'")
        .await;
    assert_eq!(
        family
            .matches("<span class=\"status s-running\">● RUNNING")
            .count(),
        running.len()
    );

    // The chart: a line per run (own part; inherited part faint), each
    // bucket's lowest and highest value where the same buckets computed in
    // plain SQL put them.
    let chart = chart_of(&family);
    let svg = &chart.svg;
    let n = number(svg, "data-buckets");
    assert!(n >= 100, "{svg}");
    chart.assert_draws(
        &chart_oracle(&c, &family_source("train/loss"), n, None).await,
        None,
    );
    let runs_drawn: BTreeSet<&String> = chart.lines.keys().map(|(run, _)| run).collect();
    let runs: BTreeSet<&String> = expected.iter().map(|(run, _, _)| run).collect();
    assert_eq!(runs_drawn, runs, "every run has its line");
    assert!(family.matches("<line class=\"fork\"").count() >= runs.len() - 1);
    let body = tags(&family, "<body")[0];
    println!(
        "family chart VS-1 train/loss in the browser: fragment fetched in {} ms, shown in {} ms",
        attr(body, "data-fetch-ms").unwrap(),
        attr(body, "data-render-ms").unwrap()
    );

    // Zoom in: the page asks the server for the narrower step range, and draws it.
    let (from, to) = (number(svg, "data-from"), number(svg, "data-to"));
    let zoom_url = href(&family, "class=\"zoom-in\"");
    let zoomed = c.page(&bin, &zoom_url);
    let chart = chart_of(&zoomed);
    let svg = &chart.svg;
    let (zfrom, zto) = (number(svg, "data-from"), number(svg, "data-to"));
    let requested = attr(tags(&zoomed, "<body")[0], "data-requested").unwrap();
    assert!(
        requested.starts_with("/api/console/p/vision-sweep/f/VS-1?")
            && requested.contains(&format!("from={zfrom}&to={zto}")),
        "{requested}"
    );
    assert!(from < zfrom && zto < to && zto - zfrom <= (to - from) / 2 + 1);
    let n = number(svg, "data-buckets");
    let range = Some((zfrom, zto));
    chart.assert_draws(
        &chart_oracle(&c, &family_source("train/loss"), n, range).await,
        range,
    );
    let left: f64 = attr(svg, "data-left").unwrap().parse().unwrap();
    let width: f64 = attr(svg, "data-plot-width").unwrap().parse().unwrap();
    for line in tags(&zoomed, "<polyline") {
        for xy in attr(line, "points").unwrap().split_whitespace() {
            let x: f64 = xy.split(',').next().unwrap().parse().unwrap();
            assert!(
                x >= left - 0.1 && x <= left + width + 0.1,
                "{x} outside the plot"
            );
        }
    }

    // Run: the family page links it; parent, config against the parent's,
    // history, files.
    let run_url = href(&family, ">VS-6<");
    assert_eq!(run_url, "/p/vision-sweep/r/VS-6");
    let run = c.page(&bin, &run_url);
    assert!(run.contains("<h1 data-run=\"VS-6\">"), "{run}");
    let parent = c
        .sql("SELECT p.display_id FROM runs r JOIN runs p ON p.id = r.parent_id WHERE r.display_id = 'VS-6'")
        .await;
    let parent = parent[0]["display_id"].as_str().unwrap();
    assert!(run.contains(&format!("href=\"/p/vision-sweep/r/{parent}\"")));
    assert!(
        run.contains("Config (against the parent's)")
            && run.contains("<table class=\"grid config\">")
    );
    let events = c
        .sql("SELECT count(*) AS n FROM run_status_events e JOIN runs r ON r.id = e.run_id WHERE r.display_id = 'VS-6'")
        .await;
    let rows_of = |class: &str| {
        run.split(&format!("<table class=\"grid {class}\">"))
            .nth(1)
            .map_or(0, |t| {
                t[..t.find("</table>").unwrap()].matches("<tr>").count() - 1
            })
    };
    assert_eq!(rows_of("history") as u64, events[0]["n"].as_u64().unwrap());
    let files = c
        .sql(&format!(
            "SELECT count(*) AS n FROM files WHERE run_id = {vs6}"
        ))
        .await;
    assert_eq!(rows_of("files") as u64, files[0]["n"].as_u64().unwrap());
    assert!(run.contains("<td>confusion.png</td><td>png</td><td>3</td><td>40</td>"));

    // Another project's key in the browser: the error, none of the family.
    let denied = dom(&bin, &format!("{}{family_url}#key={lm_key}", c.base));
    assert!(denied.contains("data-status=\"403\""), "{denied}");
    assert!(!denied.contains("VS-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_compare_and_sql() {
    let (_dir, _server, c, lm_key) = demo().await;
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let family_url = "/p/vision-sweep/f/VS-1";

    // Raw points: each run's own, from the metrics table, none inherited.
    let raw = c.page(&bin, &format!("{family_url}?metric=train/loss&inherited=0"));
    let chart = chart_of(&raw);
    assert_eq!(attr(&chart.svg, "data-inherited").as_deref(), Some("false"));
    assert!(raw.contains("class=\"toggle-inherited\" data-on=\"false\""));
    let source = "(SELECT m.run_id, m.step, m.value, false AS inherited FROM metrics m \
                  JOIN family_runs('VS-1') f ON f.run_id = m.run_id WHERE m.metric = 'train/loss')";
    let n = number(&chart.svg, "data-buckets");
    chart.assert_draws(&chart_oracle(&c, source, n, None).await, None);
    assert!(chart.lines.keys().all(|(_, part)| part == "own"));

    // The axis: log and linear as asked (train/loss is positive).
    for (axis, log) in [("log", "true"), ("linear", "false")] {
        let page = c.page(&bin, &format!("{family_url}?metric=train/loss&axis={axis}"));
        let svg = chart_of(&page).svg;
        assert_eq!(attr(&svg, "data-log").as_deref(), Some(log), "{axis}");
        assert!(page.contains(&format!("class=\"axis-{axis} current\"")));
    }

    // Two metrics side by side: the "+" link adds one, each chart its own answer.
    let single = c.page(&bin, &format!("{family_url}?metric=train/loss"));
    let two_url = href(&single, "data-metric=\"val/loss\"");
    assert!(
        two_url.contains("metric=train%2Floss&metric=val%2Floss"),
        "{two_url}"
    );
    let two = c.page(&bin, &two_url);
    let charts = charts_of(&two);
    assert_eq!(charts.len(), 2);
    for (chart, metric) in charts.iter().zip(["train/loss", "val/loss"]) {
        assert_eq!(attr(&chart.svg, "data-metric").as_deref(), Some(metric));
        let n = number(&chart.svg, "data-buckets");
        chart.assert_draws(
            &chart_oracle(&c, &family_source(metric), n, None).await,
            None,
        );
    }

    // Compare: runs of two families on one chart, with the report's table.
    let compare_url = "/p/vision-sweep/compare?runs=VS-6,VS-12&metric=train/loss";
    let compare = c.page(&bin, compare_url);
    let chart = chart_of(&compare);
    let source = "(SELECT * FROM stitched_metrics('VS-6', 'train/loss') \
                  UNION ALL SELECT * FROM stitched_metrics('VS-12', 'train/loss'))";
    let n = number(&chart.svg, "data-buckets");
    chart.assert_draws(&chart_oracle(&c, source, n, None).await, None);
    let drawn: BTreeSet<&str> = chart.lines.keys().map(|(r, _)| r.as_str()).collect();
    assert_eq!(drawn, BTreeSet::from(["VS-6", "VS-12"]));
    let table = compare
        .split("<section class=\"report\" data-metric=\"train/loss\">")
        .nth(1)
        .expect("the report's table");
    let table = &table[..table.find("</table>").unwrap()];
    for run in ["VS-6", "VS-12"] {
        let points = c
            .sql(&format!(
                "SELECT count(*) AS n FROM stitched_metrics('{run}', 'train/loss') WHERE NOT isnan(value) AND value < 1e308 AND value > -1e308"
            ))
            .await[0]["n"]
            .as_u64()
            .unwrap();
        let row = table
            .split("<tr")
            .find(|r| r.contains(&format!("</i>{run}</td>")))
            .unwrap_or_else(|| panic!("{run} in {table}"));
        assert!(row.contains(&format!("<td>{points}")), "{points} in {row}");
    }
    assert!(compare.contains("name=\"runs\" value=\"VS-12\" checked"));

    // SQL page: the rows of the query, with their count.
    let sql = "SELECT * FROM lineage('VS-6')";
    let page = c.page(&bin, &format!("/sql?q={}", urlencode(sql)));
    let rows = c.sql(sql).await;
    assert!(
        page.contains(&format!("data-rows=\"{}\"", rows.len())),
        "{page}"
    );
    let table = &page[page
        .find("<table class=\"grid rows\">")
        .expect("a result table")..];
    let table = &table[..table.find("</table>").unwrap()];
    for row in &rows {
        let cells = format!(
            "<td>{}</td><td>{}</td><td>{}</td>",
            row["run_id"],
            row["display_id"].as_str().unwrap(),
            row["depth"]
        );
        assert!(table.contains(&cells), "{cells} in {table}");
    }
    assert_eq!(table.matches("<tr>").count(), rows.len() + 1);
    // A bad query shows the API's JSON error.
    let page = c.page(
        &bin,
        &format!("/sql?q={}", urlencode("SELECT nope FROM runs")),
    );
    assert!(
        page.contains("class=\"error\" data-status=\"400\""),
        "{page}"
    );

    // Download: the Parquet file the page saves holds the SQL answer.
    let sql = "SELECT * FROM family_metrics('VS-1', 'val/loss') ORDER BY run_id, step";
    let files = downloads(
        &bin,
        &c.url(&format!("/sql?q={}&download=parquet", urlencode(sql))),
    );
    assert_eq!(
        files.len(),
        1,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let (name, file) = &files[0];
    assert_eq!(name, "result.parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
        bytes::Bytes::from(file.clone()),
        8192,
    )
    .unwrap();
    let downloaded: Vec<_> = reader.map(Result::unwrap).collect();
    let answer = c.sql_arrow(sql).await;
    let rows: usize = answer.iter().map(|b| b.num_rows()).sum();
    assert!(rows > 1000, "{rows}");
    let text = |batches: &[arrow::array::RecordBatch]| {
        arrow::util::pretty::pretty_format_batches(batches)
            .unwrap()
            .to_string()
    };
    assert_eq!(text(&downloaded), text(&answer));
    println!(
        "SQL page download: {} rows, {} bytes of Parquet",
        rows,
        file.len()
    );

    // Another project's key: none of vision-sweep on the compare page either.
    let denied = dom(&bin, &format!("{}{compare_url}#key={lm_key}", c.base));
    assert!(denied.contains("data-status=\"403\""), "{denied}");
    // (The page's own URL names the runs; what it shows names none.)
    let shown = &denied[denied.find("<main").unwrap()..denied.find("</main>").unwrap()];
    assert!(
        !shown.contains("VS-12") && !shown.contains("VS-6"),
        "{shown}"
    );

    if let Some(dir) = std::env::var_os("SCREENSHOT_TO") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let shots = [
            (
                format!("{family_url}?metric=train/loss"),
                "console-family.png",
            ),
            (
                format!("/sql?q={}", urlencode("SELECT * FROM lineage('VS-6')")),
                "console-sql.png",
            ),
            (compare_url.to_string(), "console-compare.png"),
        ];
        for (path, file) in shots {
            screenshot(&bin, &c.url(&path), &dir.join(file));
        }
    }
}

#[tokio::test]
async fn no_console_and_read_only() {
    let (_dir, store) = temp_store();
    let off = spawn_server_with(&store, &["--no-console"]);
    for path in [
        "/",
        "/sql",
        "/p/x",
        "/p/x/compare",
        "/console/console.js",
        "/api/console/p",
    ] {
        let response = reqwest::get(format!("{}{path}", off.base)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let health = reqwest::get(format!("{}/health", off.base)).await.unwrap();
    assert_eq!(health.status(), 200);
    drop(off);
    let read_only = spawn_server_with(&store, &["--read-only"]);
    for path in ["/", "/api/console/p"] {
        let response = reqwest::get(format!("{}{path}", read_only.base))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

/// The family chart of a bigger store in the browser, timed by its own
/// performance timing: `FORKLINE_CONSOLE_STORE=/tmp/b cargo test --test
/// console -- --ignored --nocapture` on a `forkline bench-data` store. The
/// times are figures to record, not timed assertions; what the chart draws
/// is asserted as on the demo store: a line for every run of the family that
/// has points, each bucket's values where plain SQL puts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a bench-data store in FORKLINE_CONSOLE_STORE"]
async fn family_chart_of_a_bench_store() {
    let store = std::env::var("FORKLINE_CONSOLE_STORE").expect("FORKLINE_CONSOLE_STORE");
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let server = spawn_server(&store);
    let c = Console {
        base: server.base.clone(),
        key: String::new(),
    };
    let metric = forkline::fixtures::bench_data::METRICS[0];
    let roots = c
        .sql("SELECT display_id FROM runs WHERE parent_id IS NULL ORDER BY id LIMIT 1")
        .await;
    let root = roots[0]["display_id"].as_str().unwrap();
    let source = format!("family_metrics('{root}', '{metric}')");
    let points = c
        .sql(&format!(
            "SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM {source}"
        ))
        .await;
    let runs: BTreeSet<String> = c
        .sql(&format!(
            "SELECT DISTINCT r.display_id FROM {source} m JOIN runs r ON r.id = m.run_id"
        ))
        .await
        .iter()
        .map(|r| r["display_id"].as_str().unwrap().to_string())
        .collect();
    assert!(runs.len() > 1, "family {root}: {runs:?}");
    let path = format!(
        "/p/{}/f/{root}?metric={}",
        forkline::fixtures::bench_data::PROJECT,
        urlencode(metric)
    );
    for round in ["first", "second"] {
        let page = c.page(&bin, &path);
        let chart = chart_of(&page);
        let n = number(&chart.svg, "data-buckets");
        chart.assert_draws(&chart_oracle(&c, &source, n, None).await, None);
        let drawn: BTreeSet<String> = chart.lines.keys().map(|(run, _)| run.clone()).collect();
        assert_eq!(drawn, runs, "a line for every run of {root}");
        let body = tags(&page, "<body")[0];
        println!(
            "bench family {root} {metric} ({} runs, {} stitched points), {round} load: \
             fragment fetched in {} ms, shown in {} ms, {} lines, {n} buckets each at most",
            points[0]["runs"],
            points[0]["n"],
            attr(body, "data-fetch-ms").unwrap(),
            attr(body, "data-render-ms").unwrap(),
            chart.lines.len(),
        );
    }
}
