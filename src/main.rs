//! The `forkline` binary: parses the command line and reports errors in one line.

use forkline::interfaces::cli::{Cli, run};

/// Stack of every runtime thread, workers and blocking pool alike. Planning,
/// optimizing and executing a query recurse once per level of expression
/// nesting, join, subquery or common table expression; `query::admission::limits` caps
/// those, and the deepest statements it lets through ran with 8 MiB (a debug
/// build, which uses the most stack; a chain of 127 joins is the deepest, 4 to
/// 8 MiB). So this leaves 8 times that. A thread only touches the pages it uses.
const THREAD_STACK_BYTES: usize = 64 << 20;

fn main() -> std::process::ExitCode {
    forkline::logging::init();
    // The command runs on a thread of its own, whose stack is sized as the
    // workers' (the main thread's is whatever the OS gave it).
    let command = std::thread::Builder::new()
        .name("forkline".into())
        .stack_size(THREAD_STACK_BYTES)
        .spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(THREAD_STACK_BYTES)
                .build()?;
            runtime.block_on(async { run(Cli::parse_with_config_file()?).await })
        });
    let outcome = command.map_err(forkline::Error::from).and_then(|thread| {
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}
