//! Row 37 through the real binary (issue 17 §2): `countersign audit verify --store local --checkpoints DIR
//! --jwks FILE` on an embedded store whose checkpoints the real `Checkpointer` wrote to local mode's
//! directory, signed by a local key, and then the tamper matrix: a rewritten and re-hashed suffix, deleted
//! newest records, the database file put back to an older backup, a checkpoint signed by another key, a
//! checkpoint deleted from the middle. Each case also shows that plain `verify` still says "intact", so each
//! fails when the checkpoint check is removed. Every checkpoint written is also checked by `crate::jws`'s
//! verifier, independent of the product's. `checkpoints_dynamo` runs the same matrix on DynamoDB and S3.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use countersign_core::domain::checkpoint::{object_key, CHECKPOINT_TYP};
use countersign_core::domain::receipt::parse_compact;
use countersign_core::domain::AuditEvent;
use countersign_core::ports::{AuditLog, CheckpointSink, Stores, SystemClock};
use countersign_core::service::checkpoints::Checkpointer;
use countersign_local::checkpoints::DirSink;
use countersign_sqlite::{EmbeddedStore, DB_FILE};
use countersign_testkit::app::local_receipts;
use countersign_testkit::cli::{self, Ran};

/// A data directory with ten records and checkpoints at seq 3, 6 and 8 (records 9 and 10 came after the
/// newest checkpoint, as they do between two sweeper runs), the JWKS that verifies them, and a backup of the
/// database taken right after checkpoint 6.
struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    jwks: PathBuf,
    backup: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        let (dir, store) = countersign_testkit::stores::embedded();
        let receipts = local_receipts();
        let cp = Checkpointer {
            stores: Stores::from_one(store.clone()),
            sink: Arc::new(DirSink { root: dir.path().to_path_buf() }),
            receipts: receipts.clone(),
            clock: Arc::new(SystemClock),
        };
        let backup = tempfile::tempdir().unwrap();
        for (n, checkpoint) in [(3, true), (3, true), (2, true), (2, false)] {
            store.append(crate::conformance::drafts(n, "t37")).await.unwrap();
            if checkpoint {
                let c = cp.run_once().await.unwrap().expect("the head moved");
                if c.seq == 6 {
                    // A consistent copy of the live (WAL) database, as `sqlite3 .backup` makes one.
                    let to = backup.path().join(DB_FILE);
                    let conn = rusqlite::Connection::open(store.db_path()).unwrap();
                    conn.execute("VACUUM INTO ?1", [to.to_str().unwrap()]).unwrap();
                }
            }
        }
        let keys = serde_json::to_value(receipts.keys().await.unwrap()).unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, keys.to_string()).unwrap();
        let written = DirSink { root: dir.path().to_path_buf() }.all().await.unwrap();
        let claims = crate::jws::assert_genuine_checkpoints(&written, &keys);
        assert_eq!(claims.iter().map(|c| c["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 6, 8]);
        Self { dir, store, jwks, backup }
    }

    /// Puts the database back to the copy taken after checkpoint 6, as restoring a backup does: local mode
    /// stopped (the store closed), the file replaced, its stale WAL and shared-memory files removed.
    fn restore_backup(self) -> Self {
        let Self { dir, store, jwks, backup } = self;
        let db = store.db_path().to_path_buf();
        drop(Arc::into_inner(store).expect("nothing else holds the store open"));
        for stale in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{stale}", db.display()));
            if p.exists() {
                std::fs::remove_file(p).unwrap();
            }
        }
        std::fs::copy(backup.path().join(DB_FILE), &db).unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        Self { dir, store, jwks, backup }
    }

    fn data_dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn checkpoint(&self, seq: u64) -> PathBuf {
        self.dir.path().join(object_key(seq))
    }

    async fn verify(&self, extra: &[&str]) -> Ran {
        let mut c = cli::command();
        c.args(["audit", "verify", "--store", "local", "--data-dir", self.data_dir()]).args(extra);
        cli::run(c).await
    }

    async fn verify_with_checkpoints(&self, extra: &[&str]) -> Ran {
        let mut args = vec!["--checkpoints", self.data_dir(), "--jwks", self.jwks.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.verify(&args).await
    }

    /// Plain `verify` cannot see it (and says so); `--checkpoints` exits 1 naming `expect`, in text and JSON.
    async fn assert_only_checkpoints_see(&self, expect: &str) {
        let plain = self.verify(&[]).await;
        let text = self.verify_with_checkpoints(&[]).await;
        let json = self.verify_with_checkpoints(&["--output", "json"]).await;
        assert_only_checkpoints_saw(&plain, &text, &json, expect);
    }
}

/// `plain` (`verify` without checkpoints) passes and says what it cannot see; `text` and `json` (with them)
/// exit 1 naming `expect`. Shared with `checkpoints_dynamo`.
pub(crate) fn assert_only_checkpoints_saw(plain: &Ran, text: &Ran, json: &Ran, expect: &str) {
    assert_eq!(plain.code, 0, "the chain itself is consistent: {plain:?}");
    assert!(plain.stdout.starts_with("intact:"), "{plain:?}");
    assert!(last_line(plain).contains("truncation and rewrites cannot be detected without them"), "{plain:?}");
    assert_eq!(text.code, 1, "{text:?}");
    assert!(text.stdout.starts_with("BROKEN: ") && text.stdout.contains(expect), "want {expect:?}: {text:?}");
    assert_eq!(json.code, 1, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(v["intact"], false, "{json:?}");
    assert_eq!(v["break"]["message"], expect, "{json:?}");
}

pub(crate) fn last_line(r: &Ran) -> &str {
    r.stdout.trim_end().lines().last().unwrap_or("")
}

/// Opens the database file behind the store's back, its append-only triggers dropped (as anyone with
/// write access to the file can).
fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn.execute_batch(
        "DROP TRIGGER IF EXISTS audit_is_append_only_update;
         DROP TRIGGER IF EXISTS audit_is_append_only_delete;",
    )
    .unwrap();
    conn
}

/// Rewrites every record from `from` on and re-hashes the chain, so it links and verifies on its own.
fn rewrite_and_rechain(path: &Path, from: u64) {
    let conn = raw(path);
    let doc = |seq: u64| -> String {
        conn.query_row("SELECT doc FROM audit WHERE seq = ?1", [i64::try_from(seq).unwrap()], |r| r.get(0)).unwrap()
    };
    let last: i64 = conn.query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0)).unwrap();
    let mut prev = serde_json::from_str::<AuditEvent>(&doc(from - 1)).unwrap().hash;
    for seq in from..=u64::try_from(last).unwrap() {
        let mut e: AuditEvent = serde_json::from_str(&doc(seq)).unwrap();
        e.details.insert("tag".into(), "rewritten".into());
        e.prev_hash = prev;
        e.hash = e.compute_hash();
        prev = e.hash.clone();
        let n = conn
            .execute(
                "UPDATE audit SET doc = ?2 WHERE seq = ?1",
                rusqlite::params![i64::try_from(seq).unwrap(), serde_json::to_string(&e).unwrap()],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_intact_chain_passes_against_its_checkpoints() {
    let f = Fixture::new().await;
    let ran = f.verify_with_checkpoints(&[]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.starts_with("intact:") && ran.stdout.contains("10 record(s), seq 1..10"), "{ran:?}");
    assert_eq!(last_line(&ran), "checkpoints: 3 verified, the newest at seq 8; the chain matches them", "{ran:?}");
    // The `checkpoints` directory itself names the same checkpoints.
    let inner = f.dir.path().join("checkpoints");
    let ran = f.verify(&["--checkpoints", inner.to_str().unwrap(), "--jwks", f.jwks.to_str().unwrap()]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let plain = f.verify(&[]).await;
    assert_eq!(plain.code, 0, "{plain:?}");
    assert_eq!(
        last_line(&plain),
        "not checked against checkpoints: truncation and rewrites cannot be detected without them \
         (--checkpoints DIR --jwks FILE)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_a_rewritten_rehashed_suffix_is_named_by_the_first_checkpoint_it_crosses() {
    let f = Fixture::new().await;
    rewrite_and_rechain(f.store.db_path(), 5);
    assert_eq!(f.store.read_from(5, 1).await.unwrap()[0].details["tag"], "rewritten");
    f.assert_only_checkpoints_see("record 6 differs from checkpoint 6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_deleted_newest_records_are_named_as_a_short_chain() {
    let f = Fixture::new().await;
    let n = raw(f.store.db_path()).execute("DELETE FROM audit WHERE seq > 5", []).unwrap();
    assert_eq!(n, 5);
    f.assert_only_checkpoints_see("chain ends at 5, checkpoint says 8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_a_restored_older_backup_is_named_as_a_short_chain_and_then_as_a_differing_record() {
    let f = Fixture::new().await.restore_backup();
    assert_eq!(f.store.last().await.unwrap().map(|e| e.seq), Some(6), "the backup was taken at checkpoint 6");
    f.assert_only_checkpoints_see("chain ends at 6, checkpoint says 8").await;
    // The restored store goes on being used: its new record 8 is not the one checkpoint 8 signed.
    f.store.append(crate::conformance::drafts(3, "after-restore")).await.unwrap();
    f.assert_only_checkpoints_see("record 8 differs from checkpoint 8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_a_checkpoint_signed_with_another_key_has_a_bad_signature() {
    let f = Fixture::new().await;
    // The same claims, signed by a key the JWKS does not hold.
    let genuine = std::fs::read_to_string(f.checkpoint(6)).unwrap();
    let claims = parse_compact(&genuine).unwrap().claims;
    let forged = local_receipts().sign_jws(CHECKPOINT_TYP, &claims).await.unwrap();
    let keys: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f.jwks).unwrap()).unwrap();
    assert!(crate::jws::verify_independently(&forged, &keys).is_err(), "a forgery, by the independent check too");
    std::fs::write(f.checkpoint(6), forged).unwrap();
    f.assert_only_checkpoints_see("checkpoint 6: bad signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_a_checkpoint_deleted_from_the_middle_breaks_the_next_ones_prev_link() {
    let f = Fixture::new().await;
    std::fs::remove_file(f.checkpoint(6)).unwrap();
    f.assert_only_checkpoints_see("checkpoint 8: prev does not link").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_every_checkpoint_deleted_is_not_a_pass() {
    let f = Fixture::new().await;
    std::fs::remove_dir_all(f.dir.path().join("checkpoints")).unwrap();
    std::fs::create_dir(f.dir.path().join("checkpoints")).unwrap();
    let ran = f.verify_with_checkpoints(&[]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("no checkpoints in"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_checkpoint_flags_need_each_other() {
    let f = Fixture::new().await;
    let ran = f.verify(&["--checkpoints", f.data_dir()]).await;
    assert_eq!(ran.code, 2, "--checkpoints requires --jwks: {ran:?}");
}

// ---- exports carry the newest checkpoint (issue 17 §2) ----

impl Fixture {
    /// `audit export --format FORMAT` of the whole store into the data directory; the file's path.
    async fn export(&self, format: &str) -> PathBuf {
        let out = self.dir.path().join(format!("audit.{format}"));
        let mut c = cli::command();
        c.args(["audit", "export", "--format", format, "--out", out.to_str().unwrap()]);
        c.args(["--store", "local", "--data-dir", self.data_dir()]);
        let ran = cli::run(c).await;
        assert_eq!(ran.code, 0, "{ran:?}");
        assert!(ran.stderr.contains("newest checkpoint seq 8 hash "), "{ran:?}");
        out
    }

    async fn verify_file(&self, file: &Path, with_jwks: bool) -> Ran {
        let mut c = cli::command();
        c.args(["audit", "verify", "--file", file.to_str().unwrap()]);
        if with_jwks {
            c.args(["--jwks", self.jwks.to_str().unwrap()]);
        }
        cli::run(c).await
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_an_export_names_the_newest_checkpoint_and_verify_file_checks_the_records_against_it() {
    let f = Fixture::new().await;
    let jsonl = f.export("jsonl").await;
    let summary: serde_json::Value = serde_json::from_str(lines(&jsonl).last().unwrap()).unwrap();
    let cp = &summary["summary"]["checkpoint"];
    let genuine = std::fs::read_to_string(f.checkpoint(8)).unwrap();
    assert_eq!(cp["seq"], 8);
    assert_eq!(cp["jws"], genuine.trim());
    assert_eq!(cp["hash"], f.store.read_from(8, 1).await.unwrap()[0].hash.as_str());

    let ran = f.verify_file(&jsonl, true).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.starts_with("intact:") && !ran.stderr.contains("not checked"), "{ran:?}");
    let ran = f.verify_file(&jsonl, false).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.contains("checkpoint 8: its signature was not checked"), "{ran:?}");

    // The store rewritten and re-hashed before the export: the file chains, but not to the checkpoint.
    rewrite_and_rechain(f.store.db_path(), 5);
    let rewritten = f.export("jsonl").await;
    let ran = f.verify_file(&rewritten, true).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("record 8 differs from checkpoint 8"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_an_export_cut_short_of_its_checkpoint_or_with_a_forged_one_is_broken() {
    let f = Fixture::new().await;
    let jsonl = f.export("jsonl").await;
    let all = lines(&jsonl);
    let tampered = f.dir.path().join("tampered.jsonl");

    // Records 6..10 dropped and the summary rewritten to match: only the checkpoint still says 8.
    let mut summary: serde_json::Value = serde_json::from_str(all.last().unwrap()).unwrap();
    let five: AuditEvent = serde_json::from_str(&all[4]).unwrap();
    summary["summary"]["records"] = 5.into();
    summary["summary"]["last_seq"] = 5.into();
    summary["summary"]["last_hash"] = five.hash.clone().into();
    let mut cut = all[..5].to_vec();
    cut.push(summary.to_string());
    write_lines(&tampered, &cut);
    let ran = f.verify_file(&tampered, true).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("chain ends at 5, checkpoint says 8"), "{ran:?}");

    // ... and with the checkpoint swapped for one the attacker signed: a bad signature.
    let claims = parse_compact(summary["summary"]["checkpoint"]["jws"].as_str().unwrap()).unwrap().claims;
    let mut forged_claims = claims.clone();
    forged_claims["seq"] = 5.into();
    forged_claims["hash"] = five.hash.clone().into();
    let forged = local_receipts().sign_jws(CHECKPOINT_TYP, &forged_claims).await.unwrap();
    summary["summary"]["checkpoint"] = serde_json::json!({"seq": 5, "hash": five.hash, "jws": forged});
    cut[5] = summary.to_string();
    write_lines(&tampered, &cut);
    let ran = f.verify_file(&tampered, true).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("checkpoint 5: bad signature"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_a_csv_export_verifies_like_jsonl_and_either_without_its_summary_line_is_broken() {
    let f = Fixture::new().await;
    let csv = f.export("csv").await;
    let rows = lines(&csv);
    assert_eq!(rows[0], "seq,at,kind,actor,request_id,policy,principal,details,prev_hash,hash");
    assert!(rows.last().unwrap().starts_with("summary,,,,,,,"), "{rows:?}");
    let ran = f.verify_file(&csv, true).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("10 record(s), seq 1..10 (from genesis)"), "{ran:?}");

    let tampered = f.dir.path().join("tampered.csv");
    let mut edited = rows.clone();
    edited[3] = edited[3].replacen("t37", "t38", 1);
    write_lines(&tampered, &edited);
    let ran = f.verify_file(&tampered, true).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("record seq 3 was edited"), "{ran:?}");

    for file in [csv, f.export("jsonl").await] {
        let all = lines(&file);
        let short = f.dir.path().join("no-summary");
        write_lines(&short, &all[..all.len() - 1]);
        let ran = f.verify_file(&short, false).await;
        assert_eq!(ran.code, 1, "a missing summary line is broken, not a note: {ran:?}");
        assert!(ran.stdout.contains("no summary line"), "{ran:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_the_report_states_checkpoint_coverage_and_fails_when_the_chain_does_not_match() {
    let f = Fixture::new().await;
    let report = |extra: &[&str]| {
        let mut c = cli::command();
        c.args(["audit", "report", "--format", "json", "--store", "local", "--data-dir", f.data_dir()]).args(extra);
        cli::run(c)
    };
    let jwks = ["--jwks", f.jwks.to_str().unwrap()];
    let ran = report(&jwks).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let c = &v["checkpoints"];
    assert_eq!((c["found"].as_u64(), c["verified"].as_bool()), (Some(3), Some(true)), "{v}");
    assert_eq!((c["newest_seq"].as_u64(), c["head_seq"].as_u64()), (Some(8), Some(10)), "{v}");
    // Without --jwks the coverage is stated, but not as verified.
    let ran = report(&[]).await;
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!((v["checkpoints"]["found"].as_u64(), v["checkpoints"]["verified"].as_bool()), (Some(3), Some(false)));

    rewrite_and_rechain(f.store.db_path(), 5);
    let ran = report(&jwks).await;
    assert_eq!(ran.code, 1, "a chain that does not match its checkpoints fails the report: {ran:?}");
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v["chain"], "verified from genesis: 10 records intact", "the chain alone still verifies");
    assert_eq!(v["checkpoints"]["broken"], "record 6 differs from checkpoint 6");
    let out = f.dir.path().join("report.html");
    let mut c = cli::command();
    c.args(["audit", "report", "--out", out.to_str().unwrap(), "--store", "local", "--data-dir", f.data_dir()]);
    c.args(jwks);
    assert_eq!(cli::run(c).await.code, 1);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(
        html.contains(r#"<p id="coverage" class="bad">checkpoints: BROKEN: record 6 differs from checkpoint 6</p>"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_a_segment_after_the_last_record_is_held_against_the_head_not_reported_as_empty() {
    let f = Fixture::new().await;
    let ran = f.verify_with_checkpoints(&["--since", "2999-01-01"]).await;
    assert_eq!(ran.code, 0, "an intact chain with an empty segment is not a short chain: {ran:?}");
    let n = raw(f.store.db_path()).execute("DELETE FROM audit WHERE seq > 5", []).unwrap();
    assert_eq!(n, 5);
    let ran = f.verify_with_checkpoints(&["--since", "2999-01-01"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("chain ends at 5, checkpoint says 8"), "{ran:?}");
}
