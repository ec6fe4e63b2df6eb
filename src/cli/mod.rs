//! The `countersign` command: clap types and one module per command group. `main → run → ExitCode`;
//! errors are printed once, with their cause chain, by [`main`].
//!
//! - workloads: `request`, `run`, `status`, `cancel`, `whoami` ([`request`], over the signed client in [`api`])
//! - operators: `policy`, `store` ([`policy`], [`store`])
//! - compliance: `audit export`, `audit verify` ([`audit`])

pub mod api;
pub mod audit;
pub mod dev;
pub mod drill;
pub mod policy;
pub mod policy_tools;
pub mod receipt;
pub mod replay;
pub mod report;
pub mod request;
pub mod store;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use countersign_core::domain::policy::parse_duration;
use countersign_core::domain::{RequestId, Timestamp};
use countersign_core::error::error_chain;

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
    /// `redeem`, `run`: approved but not usable (redemption refused: already redeemed, too late, another
    /// artifact or session); printed with the API's code.
    pub const NOT_USABLE: u8 = 9;
    /// `run`: the approved command could not be started.
    pub const CANNOT_RUN: u8 = 127;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (approved, or created without --wait; valid; intact)
  1  check failed (invalid policy file, shadowing policies with --strict, a failing policy test case,
     replayed outcomes changed with --fail-on-change, broken audit chain) or operation failed
  2  usage error
  3  denied          4  expired          5  cancelled
  6  still pending (when --timeout ran out, or `status` without --wait)
  7  refused by the API (4xx; its code and message are printed)
  8  unavailable / network error (after retries with backoff)
  9  approved but not usable (redeem refused: already_redeemed, approval_expired, artifact_mismatch, …)
  `run` exits with the command's own exit code once it has run (127 if it cannot be started).";

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
    /// Ask for approval (prints the request; with --wait, waits for the decision).
    #[command(after_help = EXIT_CODES_HELP)]
    Request {
        #[command(flatten)]
        request: RequestArgs,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ask for approval, wait, and run COMMAND only if approved.
    ///
    /// Exits with the command's exit code once it has run; otherwise with countersign's (3 denied, 4 expired,
    /// 5 cancelled, 6 still pending at --timeout, 7 refused, 8 unavailable) and the command does not run. The
    /// command gets COUNTERSIGN_REQUEST_ID in its environment. Once approved, the approval is redeemed before
    /// the command starts and the command gets its receipt in COUNTERSIGN_RECEIPT; a refused redemption
    /// exits 9 and the command does not run. countersign's own output goes to stderr, so
    /// stdout is the command's.
    #[command(after_help = EXIT_CODES_HELP)]
    Run {
        #[command(flatten)]
        request: RequestArgs,
        /// Give up waiting after this long (exit 6; the command does not run). Default: until the request
        /// is decided or expires.
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<Duration>,
        #[command(flatten)]
        api: ApiArgs,
        /// The command to run once approved, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Use an approval, once, and print its receipt (a JWS): exit 9 if the API refuses the redemption.
    #[command(after_help = EXIT_CODES_HELP)]
    Redeem(receipt::RedeemArgs),
    /// Receipts: print the keys that verify them, verify one offline.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// Show a request (exit code by status: 0 approved, 3 denied, 4 expired, 5 cancelled, 6 pending).
    #[command(after_help = EXIT_CODES_HELP)]
    Status {
        /// The request id (req_…).
        #[arg(value_parser = parse_request_id)]
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Withdraw one of your pending requests (exit 7 if it is already decided).
    #[command(after_help = EXIT_CODES_HELP)]
    Cancel {
        #[arg(value_parser = parse_request_id)]
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Who you are to AWS (sts:GetCallerIdentity): your ARN and the principal policies match on. With
    /// --endpoint, who you are to Countersign (GET /v1/whoami, local mode too): the identity the API sees,
    /// your credential type, and the policies that match you, with their actions and environments.
    #[command(after_help = EXIT_CODES_HELP)]
    Whoami {
        /// Ask the request API instead of STS (the stage URL, or local mode's URL).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Export and verify the hash-chained audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Validate, diff and apply policy files (policy-as-code).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Create the storage (DynamoDB tables or the embedded database).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Test your process: reviewer drills (row 42), and how reviewers did on them (`drill results`).
    Drill(drill::DrillArgs),
    /// Run the whole product on this machine: request API (SigV4), Slack interactions, a Slack simulator in
    /// the browser, the embedded store and the sweeper, on one HTTP server (default 127.0.0.1:8787).
    Dev(dev::DevArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file; every problem is reported with policy, field and line. Exit 0 when valid.
    ///
    /// Pairs of policies that can match the same request but differ in approvers, owners or channel are
    /// warned about (the warning names both and the one that wins); the file is still valid.
    Validate {
        /// The YAML policy file.
        file: PathBuf,
        /// Treat overlapping (shadowing) policies as errors: exit 1.
        #[arg(long)]
        strict: bool,
    },
    /// Show what `apply` would change in the store, policy by policy and field by field.
    Diff {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Validate the file and make the store match it (policies missing from the file are removed).
    /// Each change is recorded as a `policy.changed` / `policy.deleted` audit event. Shadowing policies
    /// are warned about as by `validate`.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Apply without asking (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Refuse to apply (exit 1, nothing changed) when policies shadow each other.
        #[arg(long)]
        strict: bool,
    },
    /// Check a policy file against table-driven cases (a pass/fail table); exit 1 when any case fails.
    #[command(after_help = EXIT_CODES_HELP)]
    Test(policy_tools::TestArgs),
    /// Show what the API would decide for one request: every matching policy in strictest-wins order, why
    /// the winner wins, who can approve, which owners are excluded, and the shadowing warnings that apply.
    Explain(policy_tools::ExplainArgs),
    /// Replay the requests of a period (from the audit trail) against a candidate file and list those whose
    /// outcome would change: newly denied or allowed, another policy, another quorum, approvers added or
    /// removed; with counts per policy. With --fail-on-change, exit 1 when anything would change.
    #[command(after_help = EXIT_CODES_HELP)]
    Replay(replay::ReplayArgs),
    /// Each version of a policy (or of all), from the audit trail: when it changed, who applied it, and
    /// what changed. With --at, the whole policy set as it was at that instant (JSON): who could approve what.
    History {
        /// Only this policy.
        name: Option<String>,
        /// The policy set in force at this time (RFC 3339, a date, or an age such as 30d).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<Timestamp>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        output: OutputArgs,
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

/// What to ask for (the fields of `POST /v1/requests`). Values are checked here with the API's own rules.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// What you want to do (`deploy`, `db:migrate`): [a-z0-9][a-z0-9._:-]{0,63}.
    #[arg(long, value_parser = parse_token::<countersign_core::domain::Action>)]
    pub action: String,
    /// Where (`production`, `eu-west-1:prod`): same rule as --action.
    #[arg(long = "env", value_name = "ENV", value_parser = parse_token::<countersign_core::domain::Environment>)]
    pub environment: String,
    /// What it acts on (`service/payments`), at most 256 printable characters.
    #[arg(long, value_parser = parse_token::<countersign_core::domain::Resource>)]
    pub resource: Option<String>,
    /// Why, shown to approvers (some policies require it).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Extra context for approvers (commit, pipeline URL…); repeatable.
    #[arg(long = "detail", value_name = "KEY=VALUE", value_parser = parse_detail)]
    pub details: Vec<(String, String)>,
    /// Collapses retries into one request (scoped to your principal). Without it, each invocation uses a
    /// fresh key, so the CLI's own retries never create a second request.
    #[arg(long, value_name = "K", value_parser = parse_token::<countersign_core::domain::IdempotencyKey>)]
    pub idempotency_key: Option<String>,
    /// How long approvers have (60s … the policy's max_ttl; default: max_ttl). E.g. 90s, 30m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub artifact: receipt::ArtifactArgs,
    /// Emergency: approved at once, without a vote, where the policy has a break_glass section. Needs a
    /// --reason of at least 20 characters; announced loudly, limited per day, and reviewed afterwards.
    #[arg(long, requires = "reason")]
    pub break_glass: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait for the decision (long-polls; spinner on a terminal, one line per change otherwise).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit 6). Default: until decided or expired.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, requires = "wait")]
    pub timeout: Option<Duration>,
}

/// `--retries` when not given.
const DEFAULT_RETRIES: u32 = 4;

/// Where the request API is and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The request API: the API Gateway stage URL (https://ID.execute-api.REGION.amazonaws.com/Prod) or
    /// local mode's URL.
    #[arg(long, env = "COUNTERSIGN_ENDPOINT", value_name = "URL")]
    pub endpoint: String,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// How many times to retry a call that failed with a 5xx, API Gateway throttling or a network error
    /// (exponential backoff, honouring Retry-After) before giving up with exit 8.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRIES, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
}

#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// AWS region to sign for (default: the region of an execute-api URL, else the AWS config: AWS_REGION,
    /// profile).
    #[arg(long)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// `json` prints the object only (the request object for request/run/status/cancel).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Stream audit records in chain order as JSON lines or CSV, with a summary at the end.
    ///
    /// The summary gives the records, first and last hash and the newest checkpoint (a `{"summary": …}`
    /// last line in JSONL, a `summary` last row in CSV; on stderr always). A time range is a contiguous segment of the chain; --request / --principal give a filtered
    /// view (marked as such; it cannot be verified as a chain).
    Export {
        #[command(flatten)]
        range: RangeArgs,
        /// Only the records of this request.
        #[arg(long = "request", value_name = "ID", value_parser = parse_request_id)]
        request: Option<String>,
        /// Only records about this principal (role/user ARN or assumed-role session ARN).
        #[arg(long, value_name = "ARN")]
        principal: Option<String>,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write to FILE (atomically, with a progress bar on a terminal) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Where the newest checkpoint for the summary line is read (default: the data directory with
        /// --store local, s3://$COUNTERSIGN_CHECKPOINT_BUCKET with --store dynamodb).
        #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]", value_parser = audit::parse_checkpoints)]
        checkpoints: Option<audit::CheckpointSource>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check the hash chain and report the first broken link; exit 0 only when intact.
    ///
    /// Checks the store (from genesis, or a --since/--until segment) or an export (--file): names the
    /// first record that was edited, is missing or is out of order. With --checkpoints and --jwks it also
    /// checks the store against the signed checkpoints, which detects a rewritten, re-hashed suffix and
    /// deleted newest records; without them, those cannot be detected.
    #[command(after_help = EXIT_CODES_HELP)]
    #[command(group = clap::ArgGroup::new("anchored").args(["file", "checkpoints"]).multiple(false))]
    Verify {
        #[command(flatten)]
        range: RangeArgs,
        /// Verify this export (JSON lines or CSV, with its summary line) instead of the store.
        #[arg(long, value_name = "EXPORT.jsonl|EXPORT.csv", conflicts_with_all = ["since", "until"])]
        file: Option<PathBuf>,
        /// Also check the store against the signed checkpoints here: a data directory (files
        /// `checkpoints/{seq}.jwt` below it) or s3://BUCKET[/PREFIX].
        #[arg(
            long,
            value_name = "DIR|s3://BUCKET[/PREFIX]",
            value_parser = audit::parse_checkpoints,
            requires = "jwks",
            conflicts_with_all = ["file", "until"]
        )]
        checkpoints: Option<audit::CheckpointSource>,
        /// The JWKS the checkpoints are verified with (from `countersign receipt keys`); with --file, the
        /// checkpoint in the export's summary line.
        #[arg(long, value_name = "FILE", requires = "anchored")]
        jwks: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write a compliance report from the audit trail: per policy outcomes and decision times, refusals,
    /// and approvals the current policies no longer allow. Exit 1 if the chain is broken.
    Report {
        /// Only records at or after this time (RFC 3339, a date, or an age such as 30d).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<Timestamp>,
        /// html: one self-contained file (opens offline); md: Markdown; json: the numbers.
        #[arg(long, value_enum, default_value = "html")]
        format: report::ReportFormat,
        /// Write to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The checkpoints whose coverage the report states (default: the data directory with --store
        /// local, s3://$COUNTERSIGN_CHECKPOINT_BUCKET with --store dynamodb).
        #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]", value_parser = audit::parse_checkpoints)]
        checkpoints: Option<audit::CheckpointSource>,
        /// Verify each checkpoint's signature with this JWKS (from `countersign receipt keys`) and check the
        /// chain against them; without it, coverage is stated unverified.
        #[arg(long, value_name = "FILE")]
        jwks: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    /// From the first record at or after T (RFC 3339, YYYY-MM-DD, or a duration ago: 24h, 7d).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<Timestamp>,
    /// Up to (not including) the first record at or after T (same forms as --since).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per record (exactly the hashed fields), then one `{"summary": …}` line.
    Jsonl,
    /// Fixed columns: seq,at,kind,actor,request_id,policy,principal,details,prev_hash,hash.
    Csv,
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
        Self::new(exit::FAILED, format!("{context}: {}", error_chain(e)))
    }
}

/// The async runtime's blocking threads (see [`main`]).
const BLOCKING_THREADS: usize = 8;

/// Parses arguments, runs the command, prints the error (if any) and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Few blocking threads: the embedded store runs each read on one, with a connection (and its page cache)
    // per concurrent read, and each thread gets its own malloc arena. Under `countersign dev` load the default
    // (512) grew to ~25 threads and most of the process's RSS; 8 is more than 2 cores keep busy.
    let rt =
        match tokio::runtime::Builder::new_multi_thread().max_blocking_threads(BLOCKING_THREADS).enable_all().build() {
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
        Command::Request { request: r, wait, api } => request::request(&r, &wait, &api).await,
        Command::Run { request: r, timeout, api, command } => request::run(&r, timeout, &api, &command).await,
        Command::Status { id, wait, api } => request::status(&id, &wait, &api).await,
        Command::Redeem(a) => receipt::redeem(&a.id, &a.artifact, a.out.as_deref(), &a.api).await,
        Command::Receipt(receipt::ReceiptCommand::Keys { api }) => receipt::keys(&api).await,
        Command::Receipt(receipt::ReceiptCommand::Verify {
            file,
            jwks,
            artifact,
            action,
            environment,
            principal,
            output,
        }) => receipt::verify(&file, &jwks, &artifact, action, environment, principal, output),
        Command::Cancel { id, api } => request::cancel(&id, &api).await,
        Command::Drill(a) => drill::drill(&a).await,
        Command::Whoami { endpoint: None, aws, output } => request::whoami(&aws, &output).await,
        Command::Whoami { endpoint: Some(endpoint), aws, output } => {
            policy_tools::whoami(ApiArgs { endpoint, aws, output, retries: DEFAULT_RETRIES }).await
        }
        Command::Audit(AuditCommand::Export { range, request, principal, format, out, checkpoints, store }) => {
            let filter = audit::Filter { request, principal };
            audit::export(&range, &filter, format, out.as_deref(), checkpoints.as_ref(), &store).await
        }
        Command::Audit(AuditCommand::Report { since, format, out, checkpoints, jwks, store }) => {
            report::report(since, format, out.as_deref(), checkpoints.as_ref(), jwks.as_deref(), &store).await
        }
        Command::Audit(AuditCommand::Verify { range, file, checkpoints, jwks, store, output }) => match file {
            Some(f) => audit::verify_file(&f, jwks.as_deref(), &output).await,
            None => {
                let anchors = checkpoints.zip(jwks);
                audit::verify_store(&range, anchors.as_ref().map(|(c, j)| (c, j.as_path())), &store, &output).await
            }
        },
        Command::Policy(PolicyCommand::Validate { file, strict }) => policy::validate(&file, strict),
        Command::Policy(PolicyCommand::Diff { file, store }) => policy::diff(&file, &store).await,
        Command::Policy(PolicyCommand::Apply { file, store, yes, strict }) => {
            policy::apply(&file, &store, yes, strict).await
        }
        Command::Policy(PolicyCommand::Test(args)) => policy_tools::test(&args),
        Command::Policy(PolicyCommand::Explain(args)) => policy_tools::explain(&args),
        Command::Policy(PolicyCommand::Replay(args)) => replay::replay(&args).await,
        Command::Policy(PolicyCommand::History { name, at, store, output }) => {
            policy::history(name.as_deref(), at, &store, output.output).await
        }
        Command::Store(StoreCommand::Init { store }) => store::init(&store).await,
        Command::Dev(args) => dev::run(&args).await,
    }
}

// ---- value parsers: bad values are usage errors (exit 2), caught before any call ----

fn parse_token<T: FromStr<Err = countersign_core::domain::InvalidId>>(s: &str) -> Result<String, String> {
    T::from_str(s).map(|_| s.to_string()).map_err(|e| e.problem)
}

fn parse_request_id(s: &str) -> Result<String, String> {
    RequestId::parse(s).map(|id| id.to_string()).map_err(|e| e.problem)
}

fn parse_detail(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    parse_duration(s)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_duration(s).map(Duration::from_secs)
}

/// RFC 3339, a date (midnight UTC), or a duration ago (`24h`, `7d`).
fn parse_time(s: &str) -> Result<Timestamp, String> {
    parse_time_at(s, countersign_core::ports::Clock::now(&countersign_core::ports::SystemClock))
}

fn parse_time_at(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        return Timestamp::parse_rfc3339(&format!("{s}T00:00:00Z"));
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) && s.ends_with(|c: char| c.is_ascii_alphabetic()) {
        let secs = parse_duration(s)?;
        return Ok(now.plus_seconds(-i64::try_from(secs).map_err(|_| "duration too large".to_string())?));
    }
    Err(format!("{s:?} is not a time: use RFC 3339 (2026-11-25T15:00:00Z), a date (2026-11-25) or an age (24h)"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_the_double_dash() {
        let cli = Cli::try_parse_from([
            "countersign",
            "run",
            "--action",
            "deploy",
            "--env",
            "production",
            "--endpoint",
            "http://127.0.0.1:1",
            "--detail",
            "commit=9f2c=1",
            "--",
            "./deploy.sh",
            "--env",
            "x",
        ])
        .unwrap();
        let Command::Run { command, request, .. } = cli.command else { panic!("not run") };
        assert_eq!(command, vec!["./deploy.sh", "--env", "x"]);
        assert_eq!(request.details, vec![("commit".to_string(), "9f2c=1".to_string())]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["countersign", "request", "--action", "Deploy", "--env", "p", "--endpoint", "http://x"][..],
            &["countersign", "request", "--action", "d", "--env", "p", "--endpoint", "http://x", "--ttl", "5x"],
            &["countersign", "request", "--action", "d", "--env", "p", "--endpoint", "http://x", "--timeout", "1m"],
            &["countersign", "status", "req_nope", "--endpoint", "http://x"],
            &["countersign", "request", "--action", "d", "--env", "p", "--endpoint", "http://x", "--detail", "=v"],
            &["countersign", "audit", "verify", "--file", "x.jsonl", "--since", "1d"],
            &["countersign", "audit", "verify", "--checkpoints", "dir"],
            &["countersign", "audit", "verify", "--jwks", "keys.json"],
            &["countersign", "audit", "verify", "--checkpoints", "s3://", "--jwks", "keys.json"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn times_accept_rfc3339_dates_and_ages() {
        let now = Timestamp::parse_rfc3339("2026-11-25T12:00:00Z").unwrap();
        assert_eq!(
            parse_time_at("2026-11-24", now).unwrap(),
            Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").unwrap()
        );
        assert_eq!(parse_time_at("24h", now).unwrap(), Timestamp::parse_rfc3339("2026-11-24T12:00:00Z").unwrap());
        assert_eq!(parse_time_at("2026-11-25T13:00:00+01:00", now).unwrap(), now);
        assert!(parse_time_at("yesterday", now).is_err());
    }
}
