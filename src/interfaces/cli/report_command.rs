//! `forkline report`: computes a report with a progress bar, then writes it whole.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::ReportArgs;
use crate::engine::Engine;
use crate::error::Result;
use crate::report::{self, Goals, Progress, ReportRequest};

/// Runs `report` from the command line. The output appears only once complete:
/// a file is written beside its target and renamed into place, so a failed
/// report leaves nothing behind.
pub async fn report(engine: &Engine, args: ReportArgs) -> Result<()> {
    let request = ReportRequest {
        project: args.project,
        families: ReportRequest::split_list(&args.families),
        all_families: args.all_families,
        metrics: ReportRequest::split_list(&[args.metrics]),
        goals: Goals::parse(args.goal.as_deref())?,
    };
    // indicatif draws nothing when standard error is not a terminal.
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} report: scan {pos}/{len} {msg} [{elapsed_precise}]",
        )
        .expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let progress = {
        let bar = bar.clone();
        move |p: Progress| match p {
            Progress::Start { scans } => bar.set_length(scans as u64),
            Progress::Scan { spec, rows, .. } => bar.set_message(format!("{spec}: {rows} points")),
            Progress::ScanDone { done } => bar.set_position(done as u64),
        }
    };
    let built = report::build(engine, &request, &crate::scope::Projects::All, &progress).await;
    bar.finish_and_clear();
    let bytes = report::render::render(&built?, args.format)?;
    match args.out {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut partial = path.clone().into_os_string();
            partial.push(format!(".partial-{}", std::process::id()));
            std::fs::write(&partial, &bytes)?;
            std::fs::rename(&partial, &path)?;
            eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
        }
    }
    Ok(())
}
