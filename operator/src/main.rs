//! `unified-connectors`: one binary, three subcommands.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use unified_connectors::{api, controller, telemetry};

#[derive(Parser)]
#[command(
    name = "unified-connectors",
    version,
    about = "Collect each audit-log source once, deliver it to every product"
)]
struct Cli {
    /// Log format: text for people, json for log pipelines.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (reconciles UnifiedConnectors and ProductBindings into collectors).
    Controller(controller::Args),
    /// Run one collector: read a source once, deliver to every product.
    Collector {
        /// The collector config (YAML), as the operator renders it or written by hand.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the CRDs as YAML, or write one file per CRD.
    Crds {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => write_crds(out_dir),
        Command::Controller(args) => {
            telemetry::init_tracing(&cli.log_format);
            runtime()?.block_on(controller::run(args))
        }
        Command::Collector { config } => {
            telemetry::init_tracing(&cli.log_format);
            runtime()?.block_on(unified_connectors::collector::run(&config))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn write_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    for (file, crd) in api::crd::all() {
        let yaml = api::crd::to_yaml(&crd);
        match &out_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            None => print!("{yaml}"),
        }
    }
    Ok(())
}
