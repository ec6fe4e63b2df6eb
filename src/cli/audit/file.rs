//! `audit verify --file`: an export (JSON lines or CSV, as `audit export` writes them) checked on its own.
//!
//! The summary line is what makes a file checkable end to end: without it, records cut off at the end leave
//! no trace, so a file without one is broken (exit 1). When the summary carries the newest checkpoint, the
//! file must agree with it too: the record at its seq has its hash, and a full export reaches it. With
//! `--jwks` the checkpoint's signature is verified, which is what stops a rewritten file with a rewritten
//! summary; without it the verdict says the signature was not checked.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::{json, Value};

use countersign_core::domain::audit::{ChainCheck, ChainSummary};
use countersign_core::domain::checkpoint::CheckpointCheck;
use countersign_core::domain::{AuditEvent, ChainBreak};

use super::super::receipt::{read_jwks, verify_jws_signature};
use super::checkpoints::{checkpoint_claims, AnchorBreak, Anchors};
use super::{anchor_broken, report, ExportSummary, SummaryLine, CSV_COLUMNS};
use super::{exit, CliError, OutputArgs};

/// The first cell of a CSV export's summary row; its `details` cell holds the summary as JSON.
pub const CSV_SUMMARY: &str = "summary";

/// One line of an export, read.
enum Entry {
    Record(AuditEvent),
    Summary(ExportSummary),
}

pub async fn verify_file(path: &Path, jwks: Option<&Path>, output: &OutputArgs) -> Result<u8, CliError> {
    let jwks = jwks.map(read_jwks).transpose()?;
    let f = File::open(path).map_err(|e| CliError::failed(&format!("cannot read {}", path.display()), &e))?;
    let what = path.display().to_string();
    let mut summary: Option<ExportSummary> = None;
    let mut v: Option<ChainCheck> = None;
    let mut first: Option<AuditEvent> = None;
    let mut last: Option<AuditEvent> = None;
    let mut records = 0_u64;
    let mut deciding = true;
    let mut lines = Lines { inner: BufReader::new(f).lines(), n: 0, csv: None };
    while let Some((n, line)) = lines.next_entry().map_err(|e| CliError::failed(&format!("cannot read {what}"), &e))? {
        if summary.is_some() {
            return Ok(malformed(&what, n, "a line after the summary line", output));
        }
        let e = match lines.parse(&line) {
            Ok(Entry::Record(e)) => e,
            Ok(Entry::Summary(s)) => {
                summary = Some(s);
                continue;
            }
            Err(problem) => return Ok(malformed(&what, n, &problem, output)),
        };
        records += 1;
        // An export that starts at seq 1 is checked from genesis; any other is a segment.
        let ver = v.get_or_insert_with(|| if e.seq == 1 { ChainCheck::from_genesis() } else { ChainCheck::from_any() });
        if first.is_none() {
            first = Some(e.clone());
        }
        if deciding {
            deciding = ver.push(&e);
        }
        last = Some(e);
    }
    let Some(s) = summary else {
        return Ok(malformed(
            &what,
            0,
            "no summary line: the export is incomplete, or its end was cut off (records cut off at the end cannot be \
             detected without it)",
            output,
        ));
    };
    if s.filtered {
        return Err(CliError::new(
            exit::USAGE,
            format!(
                "{what} is a filtered view (--request / --principal): its records are not a chain and cannot be \
                 verified; export without those filters to verify"
            ),
        ));
    }
    let from_genesis = v.as_ref().is_none_or(ChainCheck::is_from_genesis);
    let mut verdict = v.map_or_else(|| Ok(ChainSummary::default()), ChainCheck::finish);
    // A full export must start at genesis; a range export may start anywhere.
    if verdict.is_ok() && s.since.is_none() && !from_genesis {
        if let Some(f) = &first {
            verdict = Err(Box::new((ChainBreak::Missing { expected: 1, found: f.seq }, f.clone())));
        }
    }
    let matches = s.records == records
        && s.first_hash == first.as_ref().map(|e| e.hash.clone())
        && s.last_hash == last.as_ref().map(|e| e.hash.clone());
    if verdict.is_ok() && !matches {
        let msg = format!(
            "the file does not match its summary line (summary: {} records ending in {}; file: {records} records \
             ending in {}): records were cut off, added or replaced",
            s.records,
            s.last_hash.as_deref().unwrap_or("-"),
            last.as_ref().map_or("-", |e| e.hash.as_str())
        );
        return Ok(malformed(&what, 0, &msg, output));
    }
    let mut notes = Vec::new();
    if verdict.is_ok() {
        if let Some(b) = against_checkpoint(&s, path, jwks.as_ref(), &mut notes)? {
            return Ok(anchor_broken(&what, &b, output.output));
        }
    }
    Ok(report(verdict, from_genesis, &what, &notes, Anchors::NotApplicable, output.output))
}

/// The file against the newest checkpoint its summary names; `Some` is the break.
fn against_checkpoint(
    s: &ExportSummary,
    path: &Path,
    jwks: Option<&countersign_core::domain::receipt::Jwks>,
    notes: &mut Vec<String>,
) -> Result<Option<AnchorBreak>, CliError> {
    let Some(cp) = &s.checkpoint else {
        notes.push("the summary names no checkpoint: the export was made without one".into());
        return Ok(None);
    };
    let bad = |message: String, detail: Option<String>| AnchorBreak { kind: "checkpoint_bad", message, detail };
    let claims = match jwks {
        Some(keys) => match verify_jws_signature(&cp.jws, keys) {
            Ok(_) => checkpoint_claims(&cp.jws),
            Err(why) => return Ok(Some(bad(format!("checkpoint {}: bad signature", cp.seq), Some(why)))),
        },
        None => {
            notes.push(format!(
                "checkpoint {}: its signature was not checked (pass --jwks FILE from `countersign receipt keys`)",
                cp.seq
            ));
            checkpoint_claims(&cp.jws)
        }
    };
    let claims = match claims {
        Ok(c) => c,
        Err(why) => return Ok(Some(bad(format!("checkpoint {}: {why}", cp.seq), None))),
    };
    if claims.seq != cp.seq || claims.hash != cp.hash {
        let msg = format!("checkpoint {}: the summary line does not match the signed checkpoint", cp.seq);
        return Ok(Some(bad(msg, None)));
    }
    // The checkpoint alone: its own prev link cannot be checked without the one before it.
    let mut one = claims.clone();
    one.prev = None;
    one.count = one.seq;
    let mut check = CheckpointCheck::new(vec![one]).map_err(|e| CliError::new(exit::FAILED, e.to_string()))?;
    // A second pass over the file keeps the first one a stream; the file already parsed once.
    let what = path.display().to_string();
    let f = File::open(path).map_err(|e| CliError::failed(&format!("cannot read {what}"), &e))?;
    let mut lines = Lines { inner: BufReader::new(f).lines(), n: 0, csv: None };
    while let Some((_, line)) = lines.next_entry().map_err(|e| CliError::failed(&format!("cannot read {what}"), &e))? {
        if let Ok(Entry::Record(e)) = lines.parse(&line) {
            if let Err(b) = check.observe(&e) {
                return Ok(Some(b.into()));
            }
        }
    }
    // An export that runs to the head (no --until) must reach the checkpoint written before it.
    if s.until.is_none() {
        if let Err(b) = check.finish() {
            return Ok(Some(b.into()));
        }
    }
    Ok(None)
}

/// A file that is not a well-formed export: broken, exit 1.
fn malformed(what: &str, line: usize, problem: &str, output: &OutputArgs) -> u8 {
    let at = if line > 0 { format!(" line {line}:") } else { String::new() };
    match output.output {
        super::Output::Text => println!("BROKEN: {what}:{at} {problem}"),
        super::Output::Json => {
            println!("{}", json!({"intact": false, "break": {"kind": "malformed", "line": line, "message": problem}}))
        }
    }
    exit::FAILED
}

// ---- reading JSON lines or CSV ----

/// The entries of an export, one per JSON line or CSV row (a quoted CSV cell may span lines).
struct Lines<R: BufRead> {
    inner: std::io::Lines<R>,
    /// The line number the current entry starts on.
    n: usize,
    /// `Some(true)` once the CSV header was seen; `Some(false)` for JSON lines.
    csv: Option<bool>,
}

impl<R: BufRead> Lines<R> {
    /// The next non-empty entry and the line it starts on.
    fn next_entry(&mut self) -> std::io::Result<Option<(usize, String)>> {
        loop {
            let Some(line) = self.inner.next().transpose()? else { return Ok(None) };
            self.n += 1;
            let start = self.n;
            if line.trim().is_empty() {
                continue;
            }
            if self.csv.is_none() {
                let is_csv = line == CSV_COLUMNS.join(",");
                self.csv = Some(is_csv);
                if is_csv {
                    continue;
                }
            }
            let mut entry = line;
            // Inside a quoted cell while the count of quotes is odd ("" escapes come in pairs).
            while self.csv == Some(true) && entry.matches('"').count() % 2 == 1 {
                let Some(more) = self.inner.next().transpose()? else { break };
                self.n += 1;
                entry.push('\n');
                entry.push_str(&more);
            }
            return Ok(Some((start, entry)));
        }
    }

    fn parse(&self, entry: &str) -> Result<Entry, String> {
        if self.csv == Some(true) {
            return csv_entry(entry);
        }
        match serde_json::from_str::<AuditEvent>(entry) {
            Ok(e) => Ok(Entry::Record(e)),
            Err(err) => match serde_json::from_str::<SummaryLine>(entry) {
                Ok(s) => Ok(Entry::Summary(s.summary)),
                Err(_) => Err(format!("not an audit record: {err}")),
            },
        }
    }
}

/// The cells of one CSV row (RFC 4180: quoted cells, `""` inside them).
fn csv_cells(row: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = row.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => cells.push(std::mem::take(&mut cell)),
            (false, '"') => return Err("a quote inside an unquoted cell".into()),
            (false, c) => cell.push(c),
        }
    }
    if quoted {
        return Err("an unterminated quoted cell".into());
    }
    cells.push(cell);
    Ok(cells)
}

fn csv_entry(row: &str) -> Result<Entry, String> {
    let cells = csv_cells(row)?;
    if cells.len() != CSV_COLUMNS.len() {
        return Err(format!("{} cells, expected {} ({})", cells.len(), CSV_COLUMNS.len(), CSV_COLUMNS.join(",")));
    }
    let cell = |name: &str| cells[CSV_COLUMNS.iter().position(|c| *c == name).unwrap_or(0)].as_str();
    if cell("seq") == CSV_SUMMARY {
        return serde_json::from_str::<ExportSummary>(cell("details"))
            .map(Entry::Summary)
            .map_err(|e| format!("a summary row whose details are not a summary: {e}"));
    }
    let details: Value =
        serde_json::from_str(cell("details")).map_err(|e| format!("the details cell is not JSON: {e}"))?;
    let seq: u64 = cell("seq").parse().map_err(|_| format!("seq {:?} is not a number", cell("seq")))?;
    let request_id = Some(cell("request_id")).filter(|r| !r.is_empty());
    let doc = json!({
        "seq": seq, "at": cell("at"), "kind": cell("kind"), "actor": cell("actor"), "request_id": request_id,
        "details": details, "prev_hash": cell("prev_hash"), "hash": cell("hash"),
    });
    let e: AuditEvent = serde_json::from_value(doc).map_err(|e| format!("not an audit record: {e}"))?;
    // The convenience columns are read by people and SIEMs, but not hashed: they must say what the details say.
    for column in ["policy", "principal"] {
        if cell(column) != e.details.get(column).map_or("", String::as_str) {
            return Err(format!("seq {seq}: the {column} column does not match the record's details"));
        }
    }
    Ok(Entry::Record(e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn csv_cells_unquote_commas_quotes_and_newlines() {
        assert_eq!(
            csv_cells(
                r#"1,"a,b","say ""hi""","x
y","#
            )
            .unwrap(),
            ["1", "a,b", "say \"hi\"", "x\ny", ""]
        );
        assert!(csv_cells(r#"1,"open"#).is_err());
        assert!(csv_cells(r#"1,a"b"#).is_err());
    }
}
