//! `countersign drill --reviewers …` (threat row 42): send one deliberately suspicious request reviewers see
//! like any other, from a scenarios file; and `countersign drill results`: how each reviewer did, from the
//! audit trail. The rules (what a drill is, its reveal, that it can never be redeemed, the results) live in
//! `countersign_core::domain::drill`; this is the command line around them.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::json;

use countersign_core::domain::drill::{parse_scenarios, results, DrillResults, Scenario};
use countersign_core::domain::{Action, Environment, Timestamp};

pub mod battery;

use super::api::ApiClient;
use super::store::open;
use super::{
    exit, parse_request_id, parse_time, parse_token, ApiArgs, AwsArgs, CliError, Output, OutputArgs, StoreArgs,
    StoreKind,
};

/// The scenarios shipped with Countersign (`infra/drill-scenarios.yaml`), used without `--scenarios`.
pub const DEFAULT_SCENARIOS: &str = include_str!("../../infra/drill-scenarios.yaml");
/// `drill results` without `--since`.
const DEFAULT_SINCE_DAYS: i64 = 90;

/// Test your process: attack your own deployment (`--slack-url`), send a reviewer drill (`--reviewers`), or
/// see how reviewers did on them (`results`).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub command: Option<DrillCommand>,
    /// Run the attack battery: hostile and accidental calls to the request API and to this Slack
    /// interactions URL (the public one Slack posts to), each with the answer a sound deployment gives.
    /// Needs no Slack secret and creates nothing reviewers see. Exit 0 only when every defence held.
    #[arg(long, value_name = "URL", conflicts_with = "reviewers")]
    pub slack_url: Option<String>,
    /// Also write the battery's JSON report to FILE.
    #[arg(long, value_name = "FILE", requires = "slack_url")]
    pub report: Option<PathBuf>,
    /// For the battery's "redeem of a non-approved request of its own" case: one of your requests that is
    /// pending, denied, expired or cancelled (without it the case is skipped).
    #[arg(long, value_name = "ID", value_parser = parse_request_id, requires = "slack_url")]
    pub own_request: Option<String>,
    /// For the battery: check that every refusal it provoked is in this store's audit trail.
    #[arg(long = "store", value_enum, value_name = "STORE", requires = "slack_url")]
    pub check_store: Option<StoreKind>,
    /// With --store dynamodb: the table prefix (or COUNTERSIGN_*_TABLE).
    #[arg(long, env = "COUNTERSIGN_TABLE_PREFIX", requires = "check_store")]
    pub table_prefix: Option<String>,
    /// With --store local: the data directory.
    #[arg(long, env = "COUNTERSIGN_DATA_DIR", default_value = ".countersign")]
    pub data_dir: PathBuf,
    /// Send one reviewer drill: a deliberately suspicious request, under a policy that says `drills: true`,
    /// that reviewers see like any other. It can never be used (redeem answers 409 drill), and its message
    /// reveals it once decided or expired. Prints the request id.
    #[arg(long)]
    pub reviewers: bool,
    /// The action of the drill request (it must match a `drills: true` policy for you).
    #[arg(long, value_parser = parse_token::<Action>, requires = "reviewers")]
    pub action: Option<String>,
    /// The environment of the drill request.
    #[arg(long = "env", value_name = "ENV", value_parser = parse_token::<Environment>, requires = "reviewers")]
    pub environment: Option<String>,
    /// The scenario to send (by name). Default: one of the file's, at random.
    #[arg(long, value_name = "NAME", requires = "reviewers")]
    pub scenario: Option<String>,
    /// The scenarios file (docs/drill.md). Default: the scenarios shipped in infra/drill-scenarios.yaml.
    #[arg(long, value_name = "FILE", requires = "reviewers")]
    pub scenarios: Option<PathBuf>,
    /// The request API: the API Gateway stage URL or local mode's URL.
    #[arg(long, env = "COUNTERSIGN_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Retries of a call that failed with a 5xx, throttling or a network error (as for `request`).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Per reviewer: how many drills they approved (each a failed drill), denied, or left undecided, from
    /// the audit trail. "Left" counts the listed approvers (`approvers.users`) of a drill's policy, as it is
    /// now, who did not vote; group members count only when they voted.
    Results {
        /// Drills created at or after this time (RFC 3339, a date, or an age such as 90d). Default: 90d.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<Timestamp>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Runs `countersign drill …`.
pub async fn drill(args: &DrillArgs) -> Result<u8, CliError> {
    match &args.command {
        Some(DrillCommand::Results { since, store, output }) => drill_results(*since, store, output).await,
        None if args.reviewers => send(args).await,
        None if args.slack_url.is_some() => attack(args).await,
        None => Err(CliError::new(
            exit::USAGE,
            "countersign drill: give --slack-url URL to run the attack battery, --reviewers --action A --env E to \
             send a reviewer drill, or `drill results`",
        )),
    }
}

fn load(args: &DrillArgs) -> Result<Vec<Scenario>, CliError> {
    let (src, from) = match &args.scenarios {
        None => (DEFAULT_SCENARIOS.to_string(), "the shipped scenarios".to_string()),
        Some(p) => {
            let meta = std::fs::metadata(p).map_err(|e| CliError::new(exit::USAGE, format!("{}: {e}", p.display())))?;
            if meta.len() > countersign_core::domain::drill::MAX_SCENARIO_FILE_BYTES as u64 {
                return Err(CliError::new(exit::USAGE, format!("{}: larger than 64 KiB", p.display())));
            }
            let src =
                std::fs::read_to_string(p).map_err(|e| CliError::new(exit::USAGE, format!("{}: {e}", p.display())))?;
            (src, p.display().to_string())
        }
    };
    parse_scenarios(&src).map_err(|e| CliError::new(exit::USAGE, format!("{from}: {e}")))
}

/// The scenario named, or one at random (drills are not meant to be predictable).
fn pick<'a>(scenarios: &'a [Scenario], name: Option<&str>) -> Result<&'a Scenario, CliError> {
    match name {
        Some(n) => scenarios.iter().find(|s| s.name == n).ok_or_else(|| {
            let known: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
            CliError::new(exit::USAGE, format!("no scenario {n:?} (known: {})", known.join(", ")))
        }),
        None => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            Ok(&scenarios[nanos as usize % scenarios.len()])
        }
    }
}

/// The request body of a drill of `s`.
pub fn body(s: &Scenario, action: &str, environment: &str) -> serde_json::Value {
    let mut b = json!({
        "action": action,
        "environment": environment,
        "reason": s.reason,
        "details": s.details,
        "drill": {"scenario": s.name, "signs": s.signs},
    });
    if let Some(r) = &s.resource {
        b["resource"] = json!(r);
    }
    b
}

/// The API client of `--endpoint`.
async fn client(args: &DrillArgs) -> Result<ApiClient, CliError> {
    let Some(endpoint) = &args.endpoint else {
        return Err(CliError::new(exit::USAGE, "countersign drill needs --endpoint (or COUNTERSIGN_ENDPOINT)"));
    };
    let api = ApiArgs {
        endpoint: endpoint.clone(),
        aws: args.aws.clone(),
        output: args.output.clone(),
        retries: args.retries,
    };
    ApiClient::new(&api).await
}

async fn attack(args: &DrillArgs) -> Result<u8, CliError> {
    let api = client(args).await?;
    let slack_url = args.slack_url.as_deref().unwrap_or_default();
    let url = reqwest::Url::parse(slack_url).map_err(|e| CliError::new(exit::USAGE, format!("--slack-url: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(CliError::new(exit::USAGE, "--slack-url must be an http(s) URL"));
    }
    let store = args.check_store.map(|store| StoreArgs {
        store,
        table_prefix: args.table_prefix.clone(),
        data_dir: args.data_dir.clone(),
    });
    let battery =
        battery::Battery { api: &api, slack_url, own_request: args.own_request.as_deref(), store: store.as_ref() };
    let report = battery.run().await?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| CliError::failed("cannot encode the report", &e))?;
    if let Some(path) = &args.report {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| CliError::failed(&format!("cannot write {}", path.display()), &e))?;
    }
    match args.output.output {
        Output::Json => println!("{json}"),
        Output::Text => print!("{}", report.text()),
    }
    Ok(report.exit_code())
}

async fn send(args: &DrillArgs) -> Result<u8, CliError> {
    let (Some(action), Some(environment)) = (&args.action, &args.environment) else {
        return Err(CliError::new(exit::USAGE, "countersign drill --reviewers needs --action and --env"));
    };
    let scenarios = load(args)?;
    let scenario = pick(&scenarios, args.scenario.as_deref())?;
    let client = client(args).await?;
    let created = client.create(&body(scenario, action, environment)).await?;
    let id = created["id"].as_str().unwrap_or_default().to_string();
    match args.output.output {
        Output::Json => println!("{}", json!({"id": id, "scenario": scenario.name})),
        Output::Text => println!(
            "{id}: reviewer drill {:?} sent ({action} → {environment}); reviewers see it as a normal request, \
             and its message reveals it once decided or expired",
            scenario.name
        ),
    }
    Ok(exit::OK)
}

async fn drill_results(since: Option<Timestamp>, store: &StoreArgs, output: &OutputArgs) -> Result<u8, CliError> {
    let now = countersign_core::ports::Clock::now(&countersign_core::ports::SystemClock);
    let since = since.unwrap_or_else(|| now.plus_seconds(-DEFAULT_SINCE_DAYS * 86_400));
    let opened = open(store).await?;
    let trail = opened.whole_trail().await?;
    let policies = opened
        .stores
        .policies
        .list_policies()
        .await
        .map_err(|e| CliError::failed(&format!("cannot read the policies of {}", opened.description), &e))?;
    let r = results(&trail, &policies, since);
    match output.output {
        Output::Json => {
            println!("{}", serde_json::to_string(&r).map_err(|e| CliError::failed("cannot encode the results", &e))?)
        }
        Output::Text => print!("{}", text(&r)),
    }
    Ok(exit::OK)
}

/// The results as a table.
pub fn text(r: &DrillResults) -> String {
    let mut out = format!(
        "reviewer drills since {}: {} ({} approved = failed, {} denied, {} undecided)\n",
        r.since.to_rfc3339(),
        r.drills,
        r.failed,
        r.denied,
        r.undecided
    );
    if r.reviewers.is_empty() {
        out.push_str("no reviewer was asked or voted\n");
        return out;
    }
    out.push_str(&format!("{:<14} {:>9} {:>7} {:>5}\n", "reviewer", "approved", "denied", "left"));
    for u in &r.reviewers {
        let flag = if u.approved > 0 { "  ← approved a drill" } else { "" };
        out.push_str(&format!("{:<14} {:>9} {:>7} {:>5}{flag}\n", u.user, u.approved, u.denied, u.left));
    }
    out
}
