//! `countersign audit export | verify`: the compliance side of the hash-chained audit trail.
//!
//! A time range is always a *contiguous segment* of the chain (from the first record at or after `--since` up
//! to the first record at or after `--until`), so an exported range can be verified on its own. `--request`
//! and `--principal` give a filtered view: useful to read, marked as filtered, and refused by `verify --file`
//! (a filtered view is not a chain). `verify --checkpoints` also checks the store against the signed
//! checkpoints (issue 17, row 37), the only thing that detects a rewritten, re-hashed suffix or deleted newest
//! records; the comparison itself is `countersign_core::domain::checkpoint`'s, never redone here. Nothing
//! here writes to the store or to the checkpoints.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use countersign_core::domain::audit::{Broken, ChainCheck, ChainSummary};
use countersign_core::domain::checkpoint::CheckpointBreak;
use countersign_core::domain::{AuditEvent, ChainBreak, Principal, RequestId, Timestamp};
use countersign_core::ports::{AuditLog, Clock, SystemClock};

use super::store::open;
use super::{exit, CliError, ExportFormat, Output, OutputArgs, RangeArgs, StoreArgs, StoreKind};

/// Records read per call to the store.
pub const PAGE_SIZE: usize = 500;

/// The CSV columns, in order. Stable: spreadsheets and SIEM mappings depend on them (docs/cli.md).
pub const CSV_COLUMNS: &[&str] =
    &["seq", "at", "kind", "actor", "request_id", "policy", "principal", "details", "prev_hash", "hash"];

/// `--request` / `--principal`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub request: Option<String>,
    pub principal: Option<String>,
}

impl Filter {
    fn is_filtered(&self) -> bool {
        self.request.is_some() || self.principal.is_some()
    }
}

/// The last line of a JSONL export (`{"summary": …}`), and what the CLI prints at the end of every export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub first_hash: Option<String>,
    pub last_hash: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub request: Option<String>,
    pub principal: Option<String>,
    /// True when --request or --principal was given: the records are a view, not a chain.
    pub filtered: bool,
    pub exported_at: String,
    /// The newest checkpoint when the export was made (`None`: none was found, or none was looked for).
    #[serde(default)]
    pub checkpoint: Option<SummaryCheckpoint>,
}

impl ExportSummary {
    fn push(&mut self, e: &AuditEvent) {
        self.records += 1;
        if self.first_seq.is_none() {
            self.first_seq = Some(e.seq);
            self.first_hash = Some(e.hash.clone());
        }
        self.last_seq = Some(e.seq);
        self.last_hash = Some(e.hash.clone());
    }

    fn line(&self) -> String {
        let seqs = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!(", seq {a}..{b}"),
            _ => String::new(),
        };
        let mut s = format!(
            "{} record(s){seqs}, first hash {}, last hash {}",
            self.records,
            self.first_hash.as_deref().unwrap_or("-"),
            self.last_hash.as_deref().unwrap_or("-")
        );
        match &self.checkpoint {
            Some(c) => s.push_str(&format!(", newest checkpoint seq {} hash {}", c.seq, c.hash)),
            None => s.push_str(", no checkpoint"),
        }
        if self.filtered {
            s.push_str(" (filtered view: not a verifiable chain)");
        }
        s
    }
}

#[derive(Serialize, Deserialize)]
struct SummaryLine {
    summary: ExportSummary,
}

// ---- reading a segment of the chain ----

/// Pages through the chain from the start of the range to its end, in chain order.
struct Segment<'a> {
    audit: &'a dyn AuditLog,
    from: u64,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    started: bool,
    done: bool,
}

impl<'a> Segment<'a> {
    fn new(audit: &'a dyn AuditLog, range: &RangeArgs) -> Self {
        Self { audit, from: 1, since: range.since, until: range.until, started: range.since.is_none(), done: false }
    }

    /// The next page of records inside the range; `None` at the end.
    async fn next_page(&mut self) -> Result<Option<Vec<AuditEvent>>, CliError> {
        while !self.done {
            let page = self
                .audit
                .read_from(self.from, PAGE_SIZE)
                .await
                .map_err(|e| CliError::failed("cannot read the audit trail", &e))?;
            let Some(last) = page.last() else {
                self.done = true;
                break;
            };
            // Keys are distinct and >= from, so `from + len` never passes an unread key; the max also keeps
            // a tampered record whose seq went backwards from looping us forever.
            self.from = (last.seq.saturating_add(1)).max(self.from.saturating_add(page.len() as u64));
            let mut out = Vec::with_capacity(page.len());
            for e in page {
                if !self.started {
                    match self.since {
                        Some(s) if e.at < s => continue,
                        _ => self.started = true,
                    }
                }
                if self.until.is_some_and(|u| e.at >= u) {
                    self.done = true;
                    break;
                }
                out.push(e);
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

// ---- export ----

/// Who a `--principal ARN` means: the ARN itself and, for an IAM/STS principal, its identity (the role or
/// user policies match on), so a role ARN also finds the records of its sessions.
struct PrincipalMatch {
    raw: String,
    identity: Option<String>,
}

impl PrincipalMatch {
    fn new(arn: &str) -> Self {
        Self { raw: arn.to_string(), identity: Principal::parse(arn).ok().map(|p| p.identity()) }
    }

    fn matches(&self, e: &AuditEvent) -> bool {
        let is_it = |s: &str| s == self.raw || self.identity.as_deref() == Some(s);
        if e.details.get("principal").is_some_and(|p| is_it(p)) {
            return true;
        }
        let actor_arn = e.actor.0.split_once(':').map(|(_, rest)| rest).unwrap_or("");
        is_it(actor_arn) || Principal::parse(actor_arn).is_ok_and(|p| is_it(&p.identity()))
    }
}

/// RFC 4180 quoting: fields with a comma, quote or line break are quoted, quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_row(e: &AuditEvent) -> String {
    let details = serde_json::to_string(&e.details).unwrap_or_default();
    let cells = [
        e.seq.to_string(),
        e.at.to_rfc3339(),
        e.kind.as_str().to_string(),
        e.actor.0.clone(),
        e.request_id.map(|r| r.to_string()).unwrap_or_default(),
        e.details.get("policy").cloned().unwrap_or_default(),
        e.details.get("principal").cloned().unwrap_or_default(),
        details,
        e.prev_hash.clone(),
        e.hash.clone(),
    ];
    cells.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",")
}

/// A CSV export's last row: `summary` in the seq column, the summary as JSON in the details column.
fn csv_summary_row(json: &str) -> String {
    CSV_COLUMNS
        .iter()
        .map(|c| match *c {
            "seq" => CSV_SUMMARY.to_string(),
            "details" => csv_field(json),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The newest checkpoint for the summary line: from `--checkpoints`, else where this store's checkpoints live
/// ([`default_checkpoints`]). Only an explicit source that cannot be read is an error; otherwise the summary
/// says there was none, and stderr says why.
async fn export_checkpoint(
    explicit: Option<&CheckpointSource>,
    store: &StoreArgs,
) -> Result<Option<SummaryCheckpoint>, CliError> {
    if let Some(source) = explicit {
        return newest_checkpoint(source).await;
    }
    let Some(source) = default_checkpoints(store) else {
        if store.store == StoreKind::Dynamodb {
            eprintln!("note: no checkpoint in the summary (pass --checkpoints s3://BUCKET[/PREFIX])");
        }
        return Ok(None);
    };
    match newest_checkpoint(&source).await {
        Ok(found) => Ok(found),
        Err(e) => {
            eprintln!("warning: no checkpoint in the summary: {}", e.message);
            Ok(None)
        }
    }
}

/// Where this store's checkpoints live when no `--checkpoints` is given: local mode's data directory (when
/// it has a `checkpoints` directory), or `s3://$COUNTERSIGN_CHECKPOINT_BUCKET` for DynamoDB.
pub(crate) fn default_checkpoints(store: &StoreArgs) -> Option<CheckpointSource> {
    match store.store {
        StoreKind::Local => {
            store.data_dir.join("checkpoints").is_dir().then(|| CheckpointSource::Dir(store.data_dir.clone()))
        }
        StoreKind::Dynamodb => std::env::var("COUNTERSIGN_CHECKPOINT_BUCKET")
            .ok()
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .map(|bucket| CheckpointSource::S3 { bucket, prefix: String::new() }),
    }
}

fn write_err(e: std::io::Error) -> CliError {
    CliError::failed("cannot write the export", &e)
}

/// Where the export goes: stdout, or a temporary file renamed over FILE once complete (a failed export
/// never looks like a finished one).
struct Sink {
    w: Box<dyn Write>,
    file: Option<(PathBuf, PathBuf)>,
}

impl Sink {
    fn open(out: Option<&Path>) -> Result<Self, CliError> {
        match out {
            None => Ok(Self { w: Box::new(BufWriter::new(std::io::stdout().lock())), file: None }),
            Some(path) => {
                let mut tmp = path.as_os_str().to_owned();
                tmp.push(format!(".partial-{}", std::process::id()));
                let tmp = PathBuf::from(tmp);
                let f = File::create(&tmp)
                    .map_err(|e| CliError::failed(&format!("cannot create {}", tmp.display()), &e))?;
                Ok(Self { w: Box::new(BufWriter::new(f)), file: Some((tmp, path.to_path_buf())) })
            }
        }
    }

    fn line(&mut self, s: &str) -> Result<(), CliError> {
        self.w.write_all(s.as_bytes()).map_err(write_err)?;
        self.w.write_all(b"\n").map_err(write_err)
    }

    fn finish(mut self) -> Result<(), CliError> {
        self.w.flush().map_err(write_err)?;
        // Closes the file before it is renamed.
        self.w = Box::new(std::io::sink());
        if let Some((tmp, path)) = self.file.take() {
            std::fs::rename(&tmp, &path)
                .map_err(|e| CliError::failed(&format!("cannot move the export to {}", path.display()), &e))?;
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.file.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

fn progress(to_file: bool, total: Option<u64>) -> ProgressBar {
    if !to_file || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{bar:40} {pos}/{len} records ({per_sec}, {eta} left)"
    } else {
        "{spinner} {pos} records ({per_sec})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

pub async fn export(
    range: &RangeArgs,
    filter: &Filter,
    format: ExportFormat,
    out: Option<&Path>,
    checkpoints: Option<&CheckpointSource>,
    store_args: &StoreArgs,
) -> Result<u8, CliError> {
    // Read before the records: the newest checkpoint then precedes the export, so a full export reaches it.
    let checkpoint = export_checkpoint(checkpoints, store_args).await?;
    let request_id = filter
        .request
        .as_deref()
        .map(RequestId::parse)
        .transpose()
        .map_err(|e| CliError::new(exit::USAGE, format!("--request: {}", e.problem)))?;
    let principal = filter.principal.as_deref().map(PrincipalMatch::new);
    let store = open(store_args).await?;
    let audit = store.stores.audit.as_ref();
    let mut summary = ExportSummary {
        since: range.since.map(|t| t.to_rfc3339()),
        until: range.until.map(|t| t.to_rfc3339()),
        request: filter.request.clone(),
        principal: filter.principal.clone(),
        filtered: filter.is_filtered(),
        exported_at: SystemClock.now().to_rfc3339(),
        checkpoint,
        ..ExportSummary::default()
    };
    let mut sink = Sink::open(out)?;
    if format == ExportFormat::Csv {
        sink.line(&CSV_COLUMNS.join(","))?;
    }
    let mut emit = |sink: &mut Sink, e: &AuditEvent| -> Result<(), CliError> {
        if principal.as_ref().is_some_and(|p| !p.matches(e)) {
            return Ok(());
        }
        let line = match format {
            ExportFormat::Jsonl => {
                serde_json::to_string(e).map_err(|err| CliError::failed("cannot encode a record", &err))?
            }
            ExportFormat::Csv => csv_row(e),
        };
        summary.push(e);
        sink.line(&line)
    };
    match request_id {
        Some(id) => {
            // The request's records come from its index, already in chain order.
            let records =
                audit.for_request(&id).await.map_err(|e| CliError::failed("cannot read the audit trail", &e))?;
            let bar = progress(out.is_some(), Some(records.len() as u64));
            for e in
                records.iter().filter(|e| range.since.is_none_or(|s| e.at >= s) && range.until.is_none_or(|u| e.at < u))
            {
                emit(&mut sink, e)?;
                bar.inc(1);
            }
            bar.finish_and_clear();
        }
        None => {
            let total = if out.is_some() && range.since.is_none() && range.until.is_none() {
                audit.last().await.ok().flatten().map(|e| e.seq)
            } else {
                None
            };
            let bar = progress(out.is_some(), total);
            let mut seg = Segment::new(audit, range);
            while let Some(page) = seg.next_page().await? {
                for e in &page {
                    emit(&mut sink, e)?;
                }
                bar.inc(page.len() as u64);
            }
            bar.finish_and_clear();
        }
    }
    let line = match format {
        ExportFormat::Jsonl => serde_json::to_string(&SummaryLine { summary: summary.clone() }),
        ExportFormat::Csv => serde_json::to_string(&summary).map(|json| csv_summary_row(&json)),
    }
    .map_err(|e| CliError::failed("cannot encode the summary", &e))?;
    sink.line(&line)?;
    sink.finish()?;
    eprintln!("exported {}", summary.line());
    Ok(exit::OK)
}

mod checkpoints;
mod file;
use super::receipt::read_jwks;
use checkpoints::{anchor_broken, check_checkpoints, newest_checkpoint, read_checkpoints, AnchorBreak, Anchors};
pub use checkpoints::{coverage, parse_checkpoints, CheckpointSource, Coverage, SummaryCheckpoint};
pub use file::{verify_file, CSV_SUMMARY};

// ---- verify ----

fn break_kind(b: &ChainBreak) -> (&'static str, u64) {
    match b {
        ChainBreak::Edited { seq } => ("edited", *seq),
        ChainBreak::Missing { expected, .. } => ("missing", *expected),
        ChainBreak::OutOfOrder { seq, .. } => ("out_of_order", *seq),
        ChainBreak::Unlinked { seq } => ("unlinked", *seq),
    }
}

fn describe_record(e: &AuditEvent) -> String {
    let req = e.request_id.map(|r| format!(" {r}")).unwrap_or_default();
    format!("seq {} at {}: {}{req} by {} (hash {})", e.seq, e.at, e.kind, e.actor.0, e.hash)
}

/// Prints the verdict; exit 0 only when intact.
fn report(
    verdict: Result<ChainSummary, Broken>,
    from_genesis: bool,
    what: &str,
    notes: &[String],
    anchors: Anchors,
    output: Output,
) -> u8 {
    let intact = verdict.is_ok();
    let code = report_chain(verdict, from_genesis, what, notes, anchors, output);
    // "The chain matches them" only holds for an intact chain; the warning holds either way.
    let last = match anchors {
        Anchors::Checked { .. } if !intact => None,
        _ => anchors.line(),
    };
    if let (Output::Text, Some(line)) = (output, last) {
        println!("{line}");
    }
    code
}

fn report_chain(
    verdict: Result<ChainSummary, Broken>,
    from_genesis: bool,
    what: &str,
    notes: &[String],
    anchors: Anchors,
    output: Output,
) -> u8 {
    match (verdict, output) {
        (Ok(s), Output::Text) => {
            let seqs = match (s.first_seq, s.last_seq) {
                (Some(a), Some(b)) => format!(", seq {a}..{b}"),
                _ => String::new(),
            };
            let anchor =
                if from_genesis || s.records == 0 { "from genesis" } else { "segment; its first record is trusted" };
            println!(
                "intact: {what}: {} record(s){seqs} ({anchor}), first hash {}, last hash {}",
                s.records,
                s.first_hash.as_deref().unwrap_or("-"),
                s.last_hash.as_deref().unwrap_or("-")
            );
            for n in notes {
                eprintln!("note: {n}");
            }
            exit::OK
        }
        (Ok(s), Output::Json) => {
            println!(
                "{}",
                json!({
                    "intact": true, "records": s.records, "from_genesis": from_genesis,
                    "first_seq": s.first_seq, "last_seq": s.last_seq,
                    "first_hash": s.first_hash, "last_hash": s.last_hash, "notes": notes,
                    "checkpoints": anchors.json(),
                })
            );
            exit::OK
        }
        (Err(broken), Output::Text) => {
            let (b, at) = *broken;
            println!("BROKEN: {what}: {b}");
            println!("  where the chain breaks: {}", describe_record(&at));
            exit::FAILED
        }
        (Err(broken), Output::Json) => {
            let (b, at) = *broken;
            let (kind, seq) = break_kind(&b);
            println!(
                "{}",
                json!({
                    "intact": false,
                    "break": {"kind": kind, "seq": seq, "message": b.to_string(), "at_record": at},
                })
            );
            exit::FAILED
        }
    }
}

/// `audit verify` on the store; with `checkpoints` (where, and the JWKS file) also against the checkpoints.
pub async fn verify_store(
    range: &RangeArgs,
    checkpoints: Option<(&CheckpointSource, &Path)>,
    store_args: &StoreArgs,
    output: &OutputArgs,
) -> Result<u8, CliError> {
    // The checkpoints first: a usage mistake (no JWKS, no directory, S3) should not wait for a long read.
    let found = match checkpoints {
        None => None,
        Some((source, jwks)) => Some((read_jwks(jwks)?, read_checkpoints(source).await?)),
    };
    let store = open(store_args).await?;
    let mut what = store.description.clone();
    if let Some(s) = range.since {
        what.push_str(&format!(" since {s}"));
    }
    let (mut anchor, anchors) = match found {
        None => (None, Anchors::Unchecked),
        Some((_, (shown, found))) if found.is_empty() => {
            let message = format!("no checkpoints in {shown}: deleted, or not written yet");
            return Ok(anchor_broken(
                &what,
                &AnchorBreak { kind: "checkpoints_missing", message, detail: None },
                output.output,
            ));
        }
        Some((jwks, (_, found))) => match check_checkpoints(found, &jwks) {
            Ok((check, anchors)) => (Some(check), anchors),
            Err(b) => return Ok(anchor_broken(&what, &b, output.output)),
        },
    };
    let from_genesis = range.since.is_none();
    let mut v = if from_genesis { ChainCheck::from_genesis() } else { ChainCheck::from_any() };
    let mut anchor_break: Option<CheckpointBreak> = None;
    let mut seg = Segment::new(store.stores.audit.as_ref(), range);
    'pages: while let Some(page) = seg.next_page().await? {
        for e in &page {
            if !v.push(e) {
                break 'pages;
            }
            if let Some(Err(b)) = anchor.as_mut().map(|k| k.observe(e)) {
                anchor_break = Some(b);
                break 'pages;
            }
        }
    }
    // A --since after the last record reads an empty segment: the chain still reaches the head, so the head
    // is what the checkpoints are held against (not "chain ends at 0").
    if let (Some(k), None) = (anchor.as_mut(), anchor_break.as_ref()) {
        if k.last_seen() == 0 {
            let head =
                store.stores.audit.last().await.map_err(|e| CliError::failed("cannot read the audit trail", &e))?;
            if let Some(Err(b)) = head.map(|h| k.observe(&h)) {
                anchor_break = Some(b);
            }
        }
    }
    if let Some(u) = range.until {
        what.push_str(&format!(" until {u}"));
    }
    // A broken chain is named first: its first bad record explains any checkpoint mismatch after it.
    let verdict = v.finish();
    if verdict.is_ok() {
        if let Some(b) = anchor_break.or_else(|| anchor.as_ref().and_then(|k| k.finish().err())) {
            return Ok(anchor_broken(&what, &b.into(), output.output));
        }
    }
    Ok(report(verdict, from_genesis, &what, &[], anchors, output.output))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use countersign_core::domain::audit::seal_after;
    use countersign_core::domain::{Actor, AuditDraft, AuditKind};

    fn chain(n: usize) -> Vec<AuditEvent> {
        let drafts = (0..n)
            .map(|i| {
                AuditDraft::new(
                    Timestamp::from_unix_millis(1_000 * i as i64),
                    AuditKind::RequestCreated,
                    Actor::aws("arn:aws:sts::111122223333:assumed-role/github-deploy/run-42"),
                    None,
                )
                .with("principal", "arn:aws:iam::111122223333:role/github-deploy")
                .with("reason", format!("line, \"quoted\"\nnext {i}"))
            })
            .collect();
        seal_after(None, drafts)
    }

    #[test]
    fn csv_rows_have_the_fixed_columns_and_quote_what_needs_it() {
        let e = &chain(1)[0];
        let row = csv_row(e);
        assert!(row.starts_with("1,1970-01-01T00:00:00.000Z,request.created,aws:arn:aws:sts::111122223333:"));
        assert!(row.contains(r#""{""principal"":""arn:aws:iam::111122223333:role/github-deploy"",""reason"""#));
        assert!(row.ends_with(&e.hash));
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(CSV_COLUMNS.len(), 10);
    }

    #[test]
    fn a_role_arn_finds_the_records_of_its_sessions() {
        let e = &chain(1)[0];
        assert!(PrincipalMatch::new("arn:aws:iam::111122223333:role/github-deploy").matches(e));
        assert!(PrincipalMatch::new("arn:aws:sts::111122223333:assumed-role/github-deploy/other").matches(e));
        assert!(!PrincipalMatch::new("arn:aws:iam::111122223333:role/someone-else").matches(e));
    }
}
