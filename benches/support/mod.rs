//! What the server benches share: a real `forkline serve` to load, settings
//! from the environment, and percentiles.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `name` from the environment, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `forkline serve` process and its base URL; stopped when dropped.
pub struct Server(pub std::process::Child, pub String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `forkline serve` on a loopback port over `store`, with `args`
/// after `serve`: this build's binary, or `FORKLINE_BIN` (to compare two
/// builds on one machine).
pub fn start(store: &str, args: &[&str]) -> Server {
    let mut child = Command::new(bin())
        .args(["--store", store, "serve", "--listen", "127.0.0.1:0"])
        .args(["--flight-listen", "off"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start forkline serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    Server(child, base)
}

/// The server binary: this build's, or `FORKLINE_BIN`.
pub fn bin() -> String {
    std::env::var("FORKLINE_BIN").unwrap_or(env!("CARGO_BIN_EXE_forkline").into())
}

/// A new API key of `store` opening `project` (its secret).
#[allow(dead_code)] // Not every bench uses keys.
pub fn project_key(store: &str, project: &str) -> String {
    let out = Command::new(bin())
        .args(["--store", store, "keys", "create", "--project", project])
        .output()
        .expect("forkline keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `p` quantile of `sorted` (zero when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
