//! The real binary from the shell: catalog commands, import, SQL formats, errors, persistence.

mod common;

use common::{cli, temp_store};

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
}

#[test]
fn catalog_import_and_sql_from_the_shell() {
    let (dir, store) = temp_store();
    let (ok, out, err) = cli(
        &store,
        &[
            "run",
            "create",
            "--project",
            "shell-test",
            "--name",
            "base",
            "--config",
            r#"{"lr":0.1,"opt":{"b":1}}"#,
            "--tag",
            "x",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(field(&out, "display_id"), "ST-1");

    let csv = dir.path().join("history.csv");
    let mut text = String::from("metric,step,value,time\n");
    for s in 0..=100 {
        text.push_str(&format!(
            "loss,{s},{},{}\n",
            1.0 / (s + 1) as f64,
            1_700_000_000 + s
        ));
    }
    text.push_str("odd,0,NaN,\nodd,1,inf,\nodd,2,-Infinity,2024-01-01T00:00:00Z\n");
    std::fs::write(&csv, text).unwrap();
    let (ok, out, err) = cli(&store, &["import", "--run", "ST-1", csv.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 104 point(s)"), "{out}");

    // A bad row refuses the whole file: one clear line, nothing committed.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "metric,step,value\nloss,200,1.0\nloss,-3,2.0\n").unwrap();
    let (ok, _, err) = cli(&store, &["import", "--run", "ST-1", bad.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("row 2") && err.contains("-3"), "{err}");
    let (ok, _, err) = cli(&store, &["import", "--run", "ST-9", csv.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown run `ST-9`"), "{err}");

    // Fork: resolved parent and fork step are printed; config deep-merged; tags inherited.
    let (ok, out, err) = cli(
        &store,
        &[
            "run",
            "fork",
            "ST-1",
            "--step",
            "50",
            "--name",
            "tuned",
            "--config",
            r#"{"opt":{"c":2}}"#,
            "--inherit-tags",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(field(&out, "display_id"), "ST-2");
    assert_eq!(field(&out, "parent_display_id"), "ST-1");
    assert_eq!(field(&out, "fork_step"), "50");
    let (ok, _, err) = cli(&store, &["run", "fork", "ST-2", "--step", "5000"]);
    assert!(
        !ok && err.contains("5000") && err.contains("0..=50"),
        "{err}"
    );
    let (ok, _, err) = cli(&store, &["run", "fork", "ST-1", "--step", "-1"]);
    assert!(!ok, "{err}");

    // A later process sees what earlier ones wrote (nothing lives only in memory).
    let (ok, out, err) = cli(
        &store,
        &[
            "sql",
            "SELECT display_id, config, array_to_string(tags, '|') AS tags FROM runs ORDER BY id",
            "--format",
            "csv",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "display_id,config,tags",
            r#"ST-1,"{""lr"":0.1,""opt"":{""b"":1}}",x"#,
            r#"ST-2,"{""lr"":0.1,""opt"":{""b"":1,""c"":2}}",x"#,
        ]
    );
    let (ok, out, _) = cli(
        &store,
        &[
            "sql",
            "SELECT count(*) AS n, sum(CASE WHEN isnan(value) THEN 1 ELSE 0 END) AS nans FROM metrics",
            "--format",
            "json",
        ],
    );
    assert!(ok);
    assert_eq!(out.trim(), r#"[{"n":104,"nans":1}]"#);

    // Query from a file, table output.
    let q = dir.path().join("q.sql");
    std::fs::write(
        &q,
        "SELECT source_run_id, count(*) AS n FROM stitched_metrics('ST-2', 'loss') GROUP BY 1",
    )
    .unwrap();
    let (ok, out, err) = cli(&store, &["sql", "-f", q.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("| 1             | 51 |"), "{out}");

    // Binary formats need --output; with it the file is a readable Parquet file.
    let (ok, _, err) = cli(&store, &["sql", "SELECT 1", "--format", "parquet"]);
    assert!(!ok && err.contains("--output"), "{err}");
    let pq = dir.path().join("out.parquet");
    let (ok, _, err) = cli(
        &store,
        &[
            "sql",
            "SELECT * FROM metrics",
            "--format",
            "parquet",
            "--output",
            pq.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&pq).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 104);

    // Status changes and the read-only rule.
    let (ok, out, _) = cli(&store, &["run", "status", "ST-2", "completed"]);
    assert!(ok && out.contains("status=COMPLETED"), "{out}");
    let (ok, _, err) = cli(&store, &["run", "status", "ST-2", "sleeping"]);
    assert!(!ok && err.contains("unknown run status"), "{err}");
    let (ok, _, err) = cli(&store, &["sql", "DROP TABLE runs"]);
    assert!(!ok && err.contains("read-only"), "{err}");
    let (ok, _, err) = cli(
        &store,
        &[
            "run",
            "create",
            "--project",
            "p",
            "--name",
            "n",
            "--config",
            "[1]",
        ],
    );
    assert!(!ok && err.contains("JSON object"), "{err}");
}

#[test]
fn readme_import_example_works() {
    let (_dir, store) = temp_store();
    let (ok, _, err) = cli(
        &store,
        &["run", "create", "--project", "vision", "--name", "baseline"],
    );
    assert!(ok, "{err}");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/data/example_history.csv");
    let rows = std::fs::read_to_string(fixture).unwrap().lines().count() - 1;
    let (ok, out, err) = cli(&store, &["import", "--run", "VIS-1", fixture]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("imported {rows} point(s)")), "{out}");
    let (ok, out, err) = cli(
        &store,
        &[
            "run",
            "fork",
            "VIS-1",
            "--step",
            "150",
            "--config",
            r#"{"lr": 0.01}"#,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(field(&out, "parent_display_id"), "VIS-1");
}

/// `--config-file` carries the global options (here the store and, on S3, the
/// endpoint settings); a flag or a `FORKLINE_*` variable beats the file.
#[test]
fn config_file_supplies_global_options_and_flags_win() {
    let (dir, store) = temp_store();
    let (_other_dir, other) = temp_store();
    let (_env_dir, from_env) = temp_store();
    let mut text = format!("# forkline settings\nstore = {store:?}\nrefresh-interval-ms = 100\n");
    if let Some((endpoint, _)) = common::test_s3() {
        text += &format!(
            "s3-endpoint = {endpoint:?}\ns3-allow-http = true\ns3-region = \"us-east-1\"\n"
        );
    }
    let file = dir.path().join("forkline.toml");
    std::fs::write(&file, text).unwrap();
    // The plain binary: no --s3-* flags, no AWS endpoint variables; only the file.
    let forkline = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_forkline"))
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ALLOW_HTTP")
            .env_remove("FORKLINE_STORE")
            .envs(env.iter().copied())
            .arg("--config-file")
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {err}");
    };
    let create = |name: &'static str| ["run", "create", "--project", "cfg", "--name", name];
    forkline(&create("from-file"), &[]);
    forkline(
        &[&["--store", other.as_str()][..], &create("from-flag")].concat(),
        &[],
    );
    forkline(
        &create("from-env"),
        &[("FORKLINE_STORE", from_env.as_str())],
    );
    let names = |store: &str| {
        let (ok, out, err) = cli(
            store,
            &[
                "sql",
                "--format",
                "csv",
                "SELECT name FROM runs ORDER BY name",
            ],
        );
        assert!(ok, "{err}");
        out.lines().skip(1).map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(names(&store), ["from-file"]);
    assert_eq!(names(&other), ["from-flag"]);
    assert_eq!(names(&from_env), ["from-env"]);

    // Mistakes are named, and nothing runs.
    for (content, says) in [
        ("s3-endpiont = \"http://x\"\n", "s3-endpiont"),
        ("store-retry-s = 0\n", "store-retry-s"),
        ("store = 3\n", "store"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, content).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_forkline"))
            .args(["--config-file"])
            .arg(&bad)
            .args(["sql", "SELECT 1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{content} was accepted");
        assert!(
            err.contains("bad.toml") && err.contains(says),
            "{content}: {err}"
        );
    }
    let (ok, _, err) = cli(
        &store,
        &[
            "--config-file",
            "/nonexistent/forkline.toml",
            "sql",
            "SELECT 1",
        ],
    );
    assert!(
        !ok && err.contains("cannot read config file /nonexistent/forkline.toml"),
        "{err}"
    );
}

/// `DATAFUSION_*` variables tune the query engine, except the settings
/// forkline's plans rely on; a bad value is refused with its name.
#[test]
fn datafusion_variables_tune_the_engine_but_not_forklines_settings() {
    let (_dir, store) = temp_store();
    let (ok, _, err) = cli(&store, &["run", "create", "--project", "p", "--name", "a"]);
    assert!(ok, "{err}");
    let settings = "SELECT name, value FROM information_schema.df_settings WHERE name IN \
         ('datafusion.execution.batch_size', 'datafusion.execution.parquet.pushdown_filters') \
         ORDER BY name";
    let run = |vars: &[(&str, &str)], sql: &str| {
        let out = common::forkline_command()
            .envs(vars.iter().copied())
            .args(["--store", &store, "sql", "--format", "csv", sql])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(
        &[
            ("DATAFUSION_EXECUTION_BATCH_SIZE", "1000"),
            ("DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS", "false"),
        ],
        settings,
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "name,value\ndatafusion.execution.batch_size,1000\n\
         datafusion.execution.parquet.pushdown_filters,true\n"
    );
    let (ok, _, err) = run(&[("DATAFUSION_EXECUTION_BATCH_SIZE", "many")], "SELECT 1");
    assert!(
        !ok && err.contains("datafusion.execution.batch_size"),
        "{err}"
    );
}

/// `demo` needs no checkout: its queries are compiled into the binary.
#[test]
fn demo_runs_from_any_directory() {
    let (_dir, store) = temp_store();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = common::forkline_command()
        .current_dir(elsewhere.path())
        .arg("--store")
        .arg(&store)
        .arg("demo")
        .output()
        .expect("run forkline");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let queries = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/queries")).unwrap();
    for query in queries {
        let name = query.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            stdout.contains(&format!("== queries/{name} ==")),
            "{name} not run: {stdout}"
        );
    }
    // The stitched view of the demo's forks has rows; an empty result would print none.
    assert!(stdout.contains("VS-"), "{stdout}");
}
