//! The `forkline` binary: parses the command line and reports errors in one line.

use clap::Parser;
use forkline::interfaces::cli::{Cli, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FORKLINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,forkline=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}
