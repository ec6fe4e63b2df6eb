//! The `countersign` command: clap types and one module per command group. `main → run → ExitCode`;
//! errors are printed once, with their cause chain, by [`run`].

pub mod dev;
pub mod policy;
pub mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes. Stable: scripts depend on them (documented in `--help` and the README).
pub mod exit {
    pub const OK: u8 = 0;
    /// A check failed (invalid policy file, broken audit chain) or an operation failed.
    pub const FAILED: u8 = 1;
    /// Usage error (bad flags, refusing to act without --yes and no terminal).
    pub const USAGE: u8 = 2;
    pub const DENIED: u8 = 3;
    pub const EXPIRED: u8 = 4;
    pub const CANCELLED: u8 = 5;
    pub const STILL_PENDING: u8 = 6;
    pub const REFUSED: u8 = 7;
    pub const UNAVAILABLE: u8 = 8;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (approved, or created without --wait; valid; intact)
  1  check failed (invalid policy file, broken audit chain) or operation failed
  2  usage error
  3  denied          4  expired          5  cancelled
  6  still pending when --timeout ran out
  7  refused by the API (4xx; its code and message are printed)
  8  unavailable / network error (after retries)";

#[derive(Debug, Parser)]
#[command(
    name = "countersign",
    version,
    about = "Human approval in Slack for what non-human identities ask to do",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, diff and apply policy files (policy-as-code).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Create the storage (DynamoDB tables or the embedded database).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run the whole product on this machine: request API (SigV4), Slack interactions, a Slack simulator in
    /// the browser, the embedded store and the sweeper, on one HTTP server (default 127.0.0.1:8787).
    Dev(dev::DevArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file; every problem is reported with policy, field and line. Exit 0 when valid.
    Validate {
        /// The YAML policy file.
        file: PathBuf,
    },
    /// Show what `apply` would change in the store, policy by policy and field by field.
    Diff {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Validate the file and make the store match it (policies missing from the file are removed).
    /// Each change is recorded as a `policy.changed` / `policy.deleted` audit event.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Apply without asking (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the DynamoDB tables (P-policies, P-requests, P-audit) with the template's keys and indexes,
    /// or the embedded database. Safe to run again.
    Init {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// DynamoDB (honours AWS_ENDPOINT_URL, AWS_REGION and the standard credential chain).
    Dynamodb,
    /// The embedded database under --data-dir (local mode).
    Local,
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Which store to use.
    #[arg(long, value_enum, default_value = "local")]
    pub store: StoreKind,
    /// DynamoDB: table name prefix (tables P-policies, P-requests, P-audit). Without it, table names come
    /// from COUNTERSIGN_POLICIES_TABLE, COUNTERSIGN_REQUESTS_TABLE and COUNTERSIGN_AUDIT_TABLE.
    #[arg(long, env = "COUNTERSIGN_TABLE_PREFIX")]
    pub table_prefix: Option<String>,
    /// Local: the data directory of the embedded store.
    #[arg(long, env = "COUNTERSIGN_DATA_DIR", default_value = ".countersign")]
    pub data_dir: PathBuf,
}

/// A failure with the exit code it maps to. The message is printed once, by `run`.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// An operation failed: message with the whole cause chain.
    pub fn failed(context: &str, e: &(dyn std::error::Error + 'static)) -> Self {
        let mut m = format!("{context}: {e}");
        let mut src = e.source();
        while let Some(s) = src {
            m.push_str(&format!(": {s}"));
            src = s.source();
        }
        Self::new(exit::FAILED, m)
    }
}

/// Parses arguments, runs the command, prints the error (if any) and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

pub async fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Policy(PolicyCommand::Validate { file }) => policy::validate(&file),
        Command::Policy(PolicyCommand::Diff { file, store }) => policy::diff(&file, &store).await,
        Command::Policy(PolicyCommand::Apply { file, store, yes }) => policy::apply(&file, &store, yes).await,
        Command::Store(StoreCommand::Init { store }) => store::init(&store).await,
        Command::Dev(args) => dev::run(&args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
