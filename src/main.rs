//! The `forkline` binary: parses the command line and reports errors in one line.

use forkline::interfaces::cli::{Cli, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    forkline::logging::init();
    match async { run(Cli::parse_with_config_file()?).await }.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}
