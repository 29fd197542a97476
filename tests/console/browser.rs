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
/// [`PAGE_TIMEOUT`]): said loudly on standard error,
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

/// The files the page at `url` downloads, by name: the profile saves
/// downloads into a folder without asking.
///
/// The browser is started without `--dump-dom`: a dumping browser exits once
/// its virtual time is spent, and a download the page started just before
/// was cut off with it (seen on CI's loaded 2-core machine: the page said
/// "downloaded", the folder was empty). Left without an action, headless
/// Chromium keeps the page open; it is stopped once the folder holds a
/// finished file (Chromium writes `name.crdownload` and renames it when the
/// last byte is on disk), or fails the test after [`PAGE_TIMEOUT`].
pub fn downloads(bin: &Path, url: &str) -> Vec<(String, Vec<u8>)> {
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
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(bin)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("run chromium");
    let deadline = Instant::now() + PAGE_TIMEOUT;
    // Chromium may reserve the final name with an empty file before the
    // `.crdownload` appears, so a listing counts only once it is finished and
    // unchanged (names and sizes) over half a second.
    let mut last = None;
    let files = loop {
        let mut listing: Vec<(String, u64)> = std::fs::read_dir(into.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect();
        listing.sort();
        let finished =
            !listing.is_empty() && listing.iter().all(|(n, _)| !n.ends_with(".crdownload"));
        if finished && last.as_ref() == Some(&listing) {
            break Some(listing);
        }
        last = finished.then_some(listing);
        if Instant::now() > deadline {
            break None;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "chromium exited ({status}) before the download of {url} finished: {}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = child.kill();
    let _ = child.wait();
    let Some(listing) = files else {
        panic!(
            "{url} downloaded no file in {PAGE_TIMEOUT:?}: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
    };
    listing
        .into_iter()
        .map(|(n, _)| {
            let bytes = std::fs::read(into.path().join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
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
