//! The `thalassa` binary: parse arguments, set up logging, run the chosen subcommand.

use clap::Parser;
use thalassa::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("THALASSA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // No colour codes in container logs and files, only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("thalassa: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Registry(args) => thalassa::app::registry::run(args).await.map(|()| 0),
            Command::Register(args) => thalassa::registry::register::run(args.into())
                .await
                .map(|()| 0),
            Command::Aqueduct(args) => thalassa::app::aqueduct::run(args).await.map(|()| 0),
            Command::Up(args) => thalassa::app::up::run(args).await.map(|()| 0),
            Command::ImportOriginal(args) => thalassa::app::import_original::run(args).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("thalassa: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
