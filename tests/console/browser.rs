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

fn run(bin: &Path, profile: &Path, args: &[String]) -> String {
    let out = std::process::Command::new(bin)
        .args(FLAGS)
        .arg("--virtual-time-budget=20000")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM after the page's script ran: virtual time waits for its fetches.
pub fn dom(bin: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    run(bin, profile.path(), &["--dump-dom".into(), url.into()])
}

/// The files the page at `url` downloads, by name, and its DOM: the profile
/// saves downloads into a folder without asking.
pub fn downloads(bin: &Path, url: &str) -> (Vec<(String, Vec<u8>)>, String) {
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
    // The browser writes `name.crdownload` and renames it when done.
    let deadline = Instant::now() + Duration::from_secs(20);
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
        if (!files.is_empty() && !partial) || Instant::now() > deadline {
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
