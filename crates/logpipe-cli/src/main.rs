//! `logpipe`: the one binary. It parses arguments, sets up logging and the
//! runtime, and dispatches to a command (`commands/`); the pipeline itself
//! is `logpipe_app` and the crates below it.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

mod args;
mod commands;

use args::{Cli, Command};

/// jemalloc, with the options in src/malloc_conf.c (build.rs links them in).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOGPIPE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,datafusion=warn,hyper=warn,reqwest=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => commands::up::run(args).await,
            Command::Generate(args) => commands::generate::run(args).await,
            Command::Sql(args) => commands::sql::run(args).await,
            Command::Batch(args) => commands::batch::run(args).await,
            Command::Jobs(command) => commands::jobs::run(command).await,
            Command::Collector(args) => commands::collector::run(args).await,
            Command::Stream(args) => commands::stream::run(args).await,
            Command::Cdc(args) => commands::cdc::run(args).await,
            Command::Tail(args) => commands::tail::run(args).await,
            Command::Token(args) => commands::token::run(args),
            Command::Compact(args) => commands::compact::run(args).await,
            Command::Check(args) => commands::check::run(args).await,
            Command::Ready(args) => commands::ready::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
