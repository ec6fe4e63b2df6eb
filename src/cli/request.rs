//! `countersign request | run | status | cancel | whoami`: what workloads (CI pipelines, jobs) call.
//!
//! stdout carries the result only (the request object with `--output json`, one summary line otherwise);
//! progress goes to stderr. `run` keeps stdout for the command it runs, so all of its own output is on stderr.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tokio::time::Instant;

use countersign_core::domain::{Principal, Timestamp};
use countersign_core::ports::{Clock, SystemClock};
use countersign_lambda::http::api::RequestView;

use super::api::{self, exit_for_status, is_final, ApiClient, MAX_WAIT_SECONDS};
use super::{exit, receipt, ApiArgs, AwsArgs, CliError, Output, OutputArgs, RequestArgs, WaitArgs};

/// The environment variable `run` passes to the approved command.
pub const REQUEST_ID_ENV: &str = "COUNTERSIGN_REQUEST_ID";
/// Shortest time between two polls, whatever the server does with `wait`.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A request object as the API returned it (kept whole for `--output json`) and its typed view.
#[derive(Debug, Clone)]
pub struct Answer {
    pub raw: Value,
    pub view: RequestView,
}

impl Answer {
    fn parse(raw: Value) -> Result<Self, CliError> {
        let view = serde_json::from_value(raw.clone())
            .map_err(|e| CliError::failed("the API answered with something that is not a request object", &e))?;
        Ok(Self { raw, view })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

fn body(r: &RequestArgs) -> Result<Value, CliError> {
    let details: BTreeMap<&str, &str> = r.details.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // A fresh key per invocation makes the CLI's own retries of the POST safe.
    let key =
        r.idempotency_key.clone().unwrap_or_else(|| format!("cli-{}", ulid::Ulid::new().to_string().to_lowercase()));
    let mut b = json!({
        "action": r.action,
        "environment": r.environment,
        "idempotency_key": key,
    });
    if let Some(v) = &r.resource {
        b["resource"] = json!(v);
    }
    if let Some(v) = &r.reason {
        b["reason"] = json!(v);
    }
    if !details.is_empty() {
        b["details"] = json!(details);
    }
    if let Some(t) = r.ttl {
        b["ttl_seconds"] = json!(t);
    }
    if r.break_glass {
        b["break_glass"] = json!(true);
    }
    if let Some(a) = r.artifact.digest()? {
        b["artifact"] = json!(a.as_str());
    }
    Ok(b)
}

fn approvals(v: &RequestView) -> String {
    format!("{}/{} approval(s)", v.approvals.len(), v.required_approvals)
}

fn who_approved(v: &RequestView) -> String {
    if v.approvals.is_empty() {
        String::new()
    } else {
        format!(" ({})", v.approvals.iter().map(|a| a.user_id.as_str()).collect::<Vec<_>>().join(", "))
    }
}

/// One line saying where a request stands.
pub fn describe(v: &RequestView) -> String {
    let what = match &v.resource {
        Some(r) => format!("{} {} {r}", v.action, v.environment),
        None => format!("{} {}", v.action, v.environment),
    };
    match v.status.as_str() {
        "approved" if v.break_glass => {
            let review = v.review.as_ref().map_or("pending", |r| r.status.as_str());
            format!("{} approved by BREAK-GLASS: {what}, review {review} (policy {})", v.id, v.policy.name)
        }
        "approved" => format!("{} approved: {what}, {}{}", v.id, approvals(v), who_approved(v)),
        "denied" => match &v.denial {
            Some(d) => format!("{} denied by {}: {what}: {}", v.id, d.user_id, d.reason),
            None => format!("{} denied: {what}", v.id),
        },
        "expired" => format!("{} expired: {what}, {} at {}", v.id, approvals(v), v.expires_at),
        "cancelled" => format!("{} cancelled: {what}", v.id),
        s => format!(
            "{} {s}: {what}, {}{}, policy {}, expires at {}",
            v.id,
            approvals(v),
            who_approved(v),
            v.policy.name,
            v.expires_at
        ),
    }
}

fn print_result(a: &Answer, output: Output, stream: Stream) {
    let text = match output {
        Output::Json => a.raw.to_string(),
        Output::Text => describe(&a.view),
    };
    match stream {
        Stream::Stdout => println!("{text}"),
        Stream::Stderr => eprintln!("{text}"),
    }
}

fn seconds_left(v: &RequestView, deadline: Option<Instant>) -> Option<u64> {
    let now = SystemClock.now();
    let to_expiry = Timestamp::parse_rfc3339(&v.expires_at)
        .ok()
        .map(|e| u64::try_from((e.unix_millis() - now.unix_millis()).max(0) / 1000).unwrap_or(0));
    let to_deadline = deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs());
    match (to_expiry, to_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn format_left(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

fn progress_line(v: &RequestView, deadline: Option<Instant>) -> String {
    let left = seconds_left(v, deadline).map(|s| format!(" · {} left", format_left(s))).unwrap_or_default();
    format!("{} {} · {}{}{left}", v.id, v.status, approvals(v), who_approved(v))
}

/// Shows waiting: a spinner on a terminal, otherwise one line per change (status or approvals).
enum Watch {
    Spinner { bar: ProgressBar, shown: Arc<Mutex<(RequestView, Option<Instant>)>>, ticker: tokio::task::JoinHandle<()> },
    Lines { last: Option<(String, usize)> },
}

impl Watch {
    fn start(first: &RequestView, deadline: Option<Instant>) -> Self {
        if !std::io::stderr().is_terminal() {
            let mut w = Self::Lines { last: None };
            w.update(first);
            return w;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {wide_msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message(progress_line(first, deadline));
        let shown = Arc::new(Mutex::new((first.clone(), deadline)));
        let (b, s) = (bar.clone(), shown.clone());
        // Time left changes every second even when nothing else does.
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let line = match s.lock() {
                    Ok(g) => progress_line(&g.0, g.1),
                    Err(_) => return,
                };
                b.set_message(line);
            }
        });
        Self::Spinner { bar, shown, ticker }
    }

    fn update(&mut self, v: &RequestView) {
        match self {
            Self::Spinner { shown, .. } => {
                if let Ok(mut g) = shown.lock() {
                    g.0 = v.clone();
                }
            }
            Self::Lines { last } => {
                let now = (v.status.clone(), v.approvals.len());
                if last.as_ref() != Some(&now) {
                    eprintln!("{}", progress_line(v, None));
                    let _ = std::io::stderr().flush();
                    *last = Some(now);
                }
            }
        }
    }

    fn finish(self) {
        if let Self::Spinner { bar, ticker, .. } = self {
            ticker.abort();
            bar.finish_and_clear();
        }
    }
}

/// Long-polls until the request is final or `timeout` runs out (then it is returned still pending).
async fn wait_for(client: &ApiClient, first: Answer, timeout: Option<Duration>) -> Result<Answer, CliError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    if is_final(&first.view.status) {
        return Ok(first);
    }
    let mut watch = Watch::start(&first.view, deadline);
    let mut current = first;
    let result = loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            break Ok(current);
        }
        let wait = left.map_or(MAX_WAIT_SECONDS, |l| l.as_secs().min(MAX_WAIT_SECONDS));
        let started = Instant::now();
        match client.get(&current.view.id, wait).await.and_then(Answer::parse) {
            Ok(a) => current = a,
            Err(e) => break Err(e),
        }
        watch.update(&current.view);
        if is_final(&current.view.status) {
            break Ok(current);
        }
        // A server that answers early must not turn this into a busy loop.
        let next = started + MIN_POLL_INTERVAL;
        let until = deadline.map_or(next, |d| next.min(d));
        tokio::time::sleep_until(until).await;
    };
    watch.finish();
    result
}

fn still_pending_hint(a: &Answer, timeout: Option<Duration>) {
    if a.view.status == "pending" {
        let after = timeout.map(|t| format!(" after {}", format_left(t.as_secs()))).unwrap_or_default();
        eprintln!(
            "gave up waiting{after}: {} is still pending ({}); `countersign status {} --wait` waits again, \
             `countersign cancel {}` withdraws it",
            a.view.id,
            approvals(&a.view),
            a.view.id,
            a.view.id
        );
    }
}

pub async fn request(r: &RequestArgs, w: &WaitArgs, args: &ApiArgs) -> Result<u8, CliError> {
    let client = ApiClient::new(args).await?;
    let created = Answer::parse(client.create(&body(r)?).await?)?;
    if !w.wait {
        print_result(&created, args.output.output, Stream::Stdout);
        return Ok(match created.view.status.as_str() {
            "pending" => exit::OK,
            s => exit_for_status(s),
        });
    }
    let done = wait_for(&client, created, w.timeout).await?;
    still_pending_hint(&done, w.timeout);
    print_result(&done, args.output.output, Stream::Stdout);
    Ok(exit_for_status(&done.view.status))
}

pub async fn status(id: &str, w: &WaitArgs, args: &ApiArgs) -> Result<u8, CliError> {
    let client = ApiClient::new(args).await?;
    let mut a = Answer::parse(client.get(id, 0).await?)?;
    if w.wait {
        a = wait_for(&client, a, w.timeout).await?;
        still_pending_hint(&a, w.timeout);
    }
    print_result(&a, args.output.output, Stream::Stdout);
    Ok(exit_for_status(&a.view.status))
}

pub async fn cancel(id: &str, args: &ApiArgs) -> Result<u8, CliError> {
    let client = ApiClient::new(args).await?;
    let a = Answer::parse(client.cancel(id).await?)?;
    print_result(&a, args.output.output, Stream::Stdout);
    Ok(exit::OK)
}

pub async fn run(
    r: &RequestArgs,
    timeout: Option<Duration>,
    args: &ApiArgs,
    command: &[OsString],
) -> Result<u8, CliError> {
    let Some((program, rest)) = command.split_first() else {
        return Err(CliError::new(exit::USAGE, "run needs a command after --"));
    };
    let client = ApiClient::new(args).await?;
    let created = Answer::parse(client.create(&body(r)?).await?)?;
    let done = wait_for(&client, created, timeout).await?;
    still_pending_hint(&done, timeout);
    print_result(&done, args.output.output, Stream::Stderr);
    if done.view.status != "approved" {
        eprintln!("not running {}: the request is {}", program.to_string_lossy(), done.view.status);
        return Ok(exit_for_status(&done.view.status));
    }
    // Redeem before the command starts: an approval is used once, by this principal, in time (row 35).
    let artifact = r.artifact.digest()?;
    let redeemed = receipt::redeem_with(&client, &done.view.id, artifact.as_ref()).await?;
    let receipt = receipt::receipt_of(&redeemed)?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest).env(REQUEST_ID_ENV, &done.view.id).env(receipt::RECEIPT_ENV, receipt);
    let program_name = program.to_string_lossy().into_owned();
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .map_err(|e| CliError::failed("the command's waiter failed", &e))?
        .map_err(|e| CliError {
            code: exit::CANNOT_RUN,
            ..CliError::failed(&format!("cannot run {program_name}"), &e)
        })?;
    Ok(exit_code_of(status))
}

/// The command's exit code; a command killed by a signal exits 128 + the signal, as shells report it.
fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    if let Some(c) = status.code() {
        return u8::try_from(c & 0xff).unwrap_or(exit::FAILED);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return u8::try_from((128 + sig) & 0xff).unwrap_or(exit::FAILED);
        }
    }
    exit::FAILED
}

pub async fn whoami(aws: &AwsArgs, output: &OutputArgs) -> Result<u8, CliError> {
    let conf = api::aws_config(aws).await;
    let id = aws_sdk_sts::Client::new(&conf).get_caller_identity().send().await.map_err(|e| {
        let code = match &e {
            aws_sdk_sts::error::SdkError::DispatchFailure(_) | aws_sdk_sts::error::SdkError::TimeoutError(_) => {
                exit::UNAVAILABLE
            }
            _ => exit::FAILED,
        };
        CliError { code, ..CliError::failed("sts:GetCallerIdentity failed", &e) }
    })?;
    let arn = id.arn().unwrap_or_default().to_string();
    let (principal, note) = match Principal::parse(&arn) {
        Ok(p) => (Some(p.identity()), None),
        Err(e) => (None, Some(format!("the request API refuses this identity: {e}"))),
    };
    match output.output {
        Output::Json => println!(
            "{}",
            json!({
                "arn": arn,
                "account": id.account(),
                "user_id": id.user_id(),
                "principal": principal,
            })
        ),
        Output::Text => {
            println!("arn:       {arn}");
            println!("account:   {}", id.account().unwrap_or("-"));
            println!("user id:   {}", id.user_id().unwrap_or("-"));
            match &principal {
                Some(p) => println!("principal: {p}   (what policies match on)"),
                None => println!("principal: -"),
            }
        }
    }
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_body_has_a_fresh_idempotency_key_unless_given() {
        let mut r = RequestArgs {
            action: "deploy".into(),
            environment: "production".into(),
            resource: None,
            reason: Some("release".into()),
            details: vec![("commit".into(), "9f2c".into())],
            idempotency_key: None,
            ttl: Some(600),
            artifact: Default::default(),
            break_glass: false,
        };
        let (a, b) = (body(&r).unwrap(), body(&r).unwrap());
        assert_ne!(a["idempotency_key"], b["idempotency_key"]);
        assert_eq!(a["details"], json!({"commit": "9f2c"}));
        assert_eq!(a["ttl_seconds"], 600);
        assert!(a.get("resource").is_none());
        r.idempotency_key = Some("run-42".into());
        assert_eq!(body(&r).unwrap()["idempotency_key"], "run-42");
        // The API refuses unknown fields: the CLI must send only the documented ones.
        let allowed = countersign_lambda::http::api::parse_body(body(&r).unwrap().to_string().as_bytes());
        assert!(allowed.is_ok(), "{:?}", allowed.err());
    }

    #[test]
    fn time_left_reads_like_a_clock() {
        assert_eq!(format_left(5), "5s");
        assert_eq!(format_left(125), "2m05s");
        assert_eq!(format_left(3 * 3600 + 61), "3h01m");
    }

    #[cfg(unix)]
    #[test]
    fn signals_exit_like_a_shell() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code_of(std::process::ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code_of(std::process::ExitStatus::from_raw(3 << 8)), 3);
    }
}
