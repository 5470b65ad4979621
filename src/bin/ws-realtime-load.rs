//! `ws-realtime-load`: load-tests a ws-realtime deployment. The logic lives
//! in `ws_realtime::load`; this file parses flags, builds the runtime and
//! prints the result.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ws_realtime::load::{self, LoadArgs, LoadError};

/// Exit status for bad flags or a refused target.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = LoadArgs::parse();
    let open_files = load::raise_open_files_limit();
    let needed = args.connections as u64 + args.publish_concurrency as u64 + 64;
    if open_files < needed {
        eprintln!(
            "ws-realtime-load: warning: the open-file limit is {open_files}, below the {needed} \
             this run needs; connections past it will fail (split the load over several processes)"
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.build().expect("a tokio runtime can be built");
    if args.recover {
        let outcome = runtime.block_on(load::recover::run(&args));
        runtime.shutdown_timeout(Duration::from_secs(1));
        return match outcome {
            Ok(summary) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string(&summary).expect("the summary always serializes")
                    );
                } else {
                    print!("{}", summary.to_text());
                }
                // A storm that lost or doubled a message fails the command.
                if summary.clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(error) => report_error(error),
        };
    }
    let outcome = runtime.block_on(load::run(&args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(summary) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).expect("the summary always serializes")
                );
            } else {
                print!("{}", summary.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(error) => report_error(error),
    }
}

/// Prints why the run could not happen and picks the exit status.
fn report_error(error: LoadError) -> ExitCode {
    eprintln!("ws-realtime-load: {error}");
    match error {
        LoadError::InvalidArgument(_) | LoadError::RemoteTarget { .. } => {
            ExitCode::from(EXIT_USAGE)
        }
        _ => ExitCode::FAILURE,
    }
}
