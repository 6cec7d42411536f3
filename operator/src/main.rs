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
    /// Lint a ConnectorDefinition offline, or test it against a server with the conformance kit.
    #[command(subcommand)]
    Definition(DefinitionCommand),
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
        Command::Definition(cmd) => definition_command(cmd),
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

#[derive(Subcommand)]
enum DefinitionCommand {
    /// Validate a definition file offline; every problem names its field.
    Lint { file: PathBuf },
    /// Run the conformance kit: the definition against a test server (see docs/connectors.md).
    Test {
        file: PathBuf,
        /// Base URL of the server (a uc-testkit server: its API and `/_admin/`).
        #[arg(long)]
        server: String,
        /// A connector parameter, `name=value`; repeatable.
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Environment variable holding the credential (the secret of the first credential kind).
        #[arg(long, conflicts_with = "credential_file")]
        credential_env: Option<String>,
        /// File holding the credential.
        #[arg(long)]
        credential_file: Option<PathBuf>,
        /// Which stream (index).
        #[arg(long, default_value_t = 0)]
        stream: usize,
        /// Poll interval once caught up (default: the definition's).
        #[arg(long, value_parser = humantime::parse_duration)]
        poll_interval: Option<std::time::Duration>,
        /// Events seeded for the completeness check (default: five pages).
        #[arg(long)]
        events: Option<usize>,
    },
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("--param {s:?}: expected name=value"))
}

fn definition_command(cmd: DefinitionCommand) -> anyhow::Result<()> {
    use unified_connectors::definition::{conformance, lint, load};
    match cmd {
        DefinitionCommand::Lint { file } => {
            let def = load(&file)?;
            let problems = lint::lint(&def.spec);
            if problems.is_empty() {
                println!(
                    "{}: ok ({} stream(s))",
                    file.display(),
                    def.spec.streams.len()
                );
                return Ok(());
            }
            for p in &problems {
                println!("{}: {p}", file.display());
            }
            anyhow::bail!("{} problem(s) in {}", problems.len(), file.display())
        }
        DefinitionCommand::Test {
            file,
            server,
            params,
            credential_env,
            credential_file,
            stream,
            poll_interval,
            events,
        } => {
            let def = load(&file)?;
            let mut opts = conformance::KitOptions::new(server);
            opts.params = params.into_iter().collect();
            opts.credential = credential_env
                .map(unified_connectors::contract::SecretSource::Env)
                .or(credential_file.map(unified_connectors::contract::SecretSource::File));
            opts.stream = stream;
            opts.poll_interval = poll_interval;
            opts.events = events;
            let report = runtime()?.block_on(conformance::run(&def, &opts))?;
            println!("{report}");
            if !report.passed() {
                anyhow::bail!("{} does not pass the conformance kit", file.display());
            }
            Ok(())
        }
    }
}
