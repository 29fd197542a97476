//! Headless Chromium for the console tests: the DOM after a page's script
//! ran, a screenshot, and a download into a folder of the test's.

use std::path::Path;

pub use super::common::chromium_or_skip;
use std::time::{Duration, Instant};

const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// Longest a browser may take for one page, in wall-clock time. Headless
/// Chromium does not always exit once a page's download is written (seen
/// with Debian's 156 on a loaded machine: the file complete, the DOM dumped,
/// the process idle for 15 minutes), so a page gets this long and the browser
/// is then stopped; outside CI its output so far is the answer (see
/// [`workaround`]).
const PAGE_TIMEOUT: Duration = Duration::from_secs(90);

/// A page needed one of the workarounds here (a browser stopped after
/// [`PAGE_TIMEOUT`], a page opened again): said loudly on standard error,
/// and a failure in CI (`CI=true`, which `.ci/run` sets), where a test that
/// passed only thanks to one must not pass quietly.
fn workaround(what: &str) {
    let rule = "!".repeat(78);
    eprintln!("\n{rule}\nBROWSER WORKAROUND: {what}\n{rule}\n");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "in CI a browser workaround is a failure: {what}"
    );
}

fn run(bin: &Path, profile: &Path, args: &[String]) -> String {
    use std::io::Read;
    let mut child = std::process::Command::new(bin)
        .args(FLAGS)
        .arg("--virtual-time-budget=20000")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let deadline = Instant::now() + PAGE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    match status {
        Some(status) => assert!(status.success(), "{err}"),
        // Stopped: what it wrote must be the whole answer (a dumped DOM
        // ends with its closing tag; a screenshot run writes nothing).
        None => {
            assert!(
                args.iter().all(|a| a != "--dump-dom") || out.trim_end().ends_with("</html>"),
                "chromium wrote no page in {PAGE_TIMEOUT:?}: {err}"
            );
            workaround(&format!(
                "chromium ran past {PAGE_TIMEOUT:?} on {args:?} and was killed; \
                 its output so far is taken as the page"
            ));
        }
    }
    out
}

/// The DOM after the page's script ran: virtual time waits for its fetches.
pub fn dom(bin: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    run(bin, profile.path(), &["--dump-dom".into(), url.into()])
}

/// The files the page at `url` downloads, by name, and its DOM: the profile
/// saves downloads into a folder without asking.
///
/// Headless Chromium dumps the DOM and exits once its virtual time is spent,
/// and a download the page started just before may be cut off with it (seen
/// on CI's loaded 2-core machine: the page said "downloaded", the folder was
/// empty). So outside CI a page whose folder stays empty is opened again, up
/// to three times, each in a fresh profile; in CI that is a failure (see
/// [`workaround`]).
pub fn downloads(bin: &Path, url: &str) -> (Vec<(String, Vec<u8>)>, String) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (files, dom) = download_once(bin, url);
        if !files.is_empty() || attempt == 3 {
            return (files, dom);
        }
        workaround(&format!(
            "download attempt {attempt} of {url} saved no file; opening it again"
        ));
    }
}

fn download_once(bin: &Path, url: &str) -> (Vec<(String, Vec<u8>)>, String) {
    let profile = tempfile::tempdir().unwrap();
    let into = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(profile.path().join("Default")).unwrap();
    let prefs = serde_json::json!({"download": {
        "default_directory": into.path(),
        "prompt_for_download": false,
        "directory_upgrade": true,
    }});
    std::fs::write(
        profile.path().join("Default/Preferences"),
        prefs.to_string(),
    )
    .unwrap();
    let dom = run(bin, profile.path(), &["--dump-dom".into(), url.into()]);
    // The browser writes `name.crdownload` and renames it when done; once it
    // has exited, a download that never started will not appear.
    let started = Instant::now();
    loop {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(into.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        let partial = files.iter().any(|(n, _)| n.ends_with(".crdownload"));
        let waited = started.elapsed();
        let done = if partial {
            waited > Duration::from_secs(20)
        } else {
            !files.is_empty() || waited > Duration::from_secs(3)
        };
        if done {
            files.retain(|(n, _)| !n.ends_with(".crdownload"));
            files.sort();
            return (files, dom);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A screenshot of the page at `url`, written to `to` (a PNG).
pub fn screenshot(bin: &Path, url: &str, to: &Path) {
    let profile = tempfile::tempdir().unwrap();
    run(
        bin,
        profile.path(),
        &[
            "--hide-scrollbars".into(),
            format!("--screenshot={}", to.display()),
            url.into(),
        ],
    );
    let png = std::fs::read(to).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
}
