//! Row 37 on AWS's stores, through the real binary (issue 17): `countersign audit verify --store dynamodb
//! --table-prefix P --checkpoints s3://BUCKET/PREFIX --jwks FILE` on DynamoDB tables and a bucket with Object
//! Lock (COMPLIANCE) on the emulator, whose checkpoints the real `Checkpointer` wrote through `S3Sink`, signed
//! by a KMS key on the emulator as the sweeper signs them. Then the tamper matrix, each done with raw SDK calls
//! as someone with write access to the table or the bucket would, around the adapters and the IAM policies:
//!
//! - a suffix rewritten and re-hashed (`PutItem` over the audit items), so the chain verifies on its own;
//! - the newest records deleted (`DeleteItem`);
//! - the tables deleted and restored from DynamoDB backups taken at checkpoint 6 (`CreateBackup`,
//!   `RestoreTableFromBackup`), then used on;
//! - a checkpoint forged with another key under the genuine `kid`, put as a new version of its object;
//! - a checkpoint hidden from the middle of the chain by a delete marker.
//!
//! Each case also shows that plain `verify` still says "intact" and that it cannot see this, so each fails when
//! the checkpoint check is removed. Every checkpoint written is checked by `crate::jws`'s verifier, independent
//! of the product's. The CLI finds the emulator through `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_S3`
//! (and, in the intact case, by name and through `AWS_ENDPOINT_URL` alone): each must reach S3 path-style.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::Value;

use countersign_aws::checkpoints::{sdk as s3, S3Sink};
use countersign_aws::dynamodb::{keys, DynamoStore, TableNames};
use countersign_core::domain::AuditEvent;
use countersign_core::ports::{AuditLog, CheckpointSink, Stores, SystemClock};
use countersign_core::service::checkpoints::Checkpointer;
use countersign_testkit::cli::{self, Ran};
use countersign_testkit::emulator::{endpoint, sdk_config, Service};
use countersign_testkit::stores::{DynamoTamper, Tamper};

use crate::checkpoints_cli::{assert_only_checkpoints_saw, last_line};
use crate::jws::{assert_genuine_checkpoints, forge, verify_independently, CHECKPOINT_TYP};

/// Where in the bucket this chain's checkpoints live (`--checkpoints s3://BUCKET/audit/prod`).
const CP_PREFIX: &str = "audit/prod";

type Item = HashMap<String, AttributeValue>;

/// Fresh tables (made by `store init`) with ten records and checkpoints at seq 3, 6 and 8 in a fresh locked
/// bucket (records 9 and 10 came after the newest, as between two sweeper runs), the JWKS that verifies them,
/// and DynamoDB backups of the three tables taken right after checkpoint 6.
struct Fixture {
    prefix: String,
    store: Arc<DynamoStore>,
    ddb: aws_sdk_dynamodb::Client,
    s3: s3::Client,
    bucket: String,
    /// The emulator's DynamoDB and S3 endpoints, as the CLI is given them.
    endpoints: [String; 2],
    _dir: tempfile::TempDir,
    keys: Value,
    jwks: PathBuf,
    /// (table, backup ARN) of each table, at checkpoint 6.
    backups: Vec<(String, String)>,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let endpoints = [endpoint(Service::Dynamodb)?, endpoint(Service::S3)?];
        let s3 = crate::checkpoints_s3::s3_client().await?;
        let receipts = crate::jws::kms_receipts().await?;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoints[0]).await);
        let prefix = format!("cs-t37-{}", ulid::Ulid::new().to_string().to_lowercase());
        let bucket = crate::checkpoints_s3::locked_bucket(&s3).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DynamoStore::new(ddb.clone(), TableNames::with_prefix(&prefix)));
        let mut f = Self {
            prefix,
            store,
            ddb,
            s3,
            bucket,
            endpoints,
            jwks: dir.path().join("jwks.json"),
            _dir: dir,
            keys: Value::Null,
            backups: Vec::new(),
        };
        let init = f.run(&["store", "init", "--store", "dynamodb", "--table-prefix", &f.prefix.clone()]).await;
        assert_eq!(init.code, 0, "{init:?}");
        let cp = Checkpointer {
            stores: Stores::from_one(f.store.clone()),
            sink: Arc::new(f.sink()),
            receipts: receipts.clone(),
            clock: Arc::new(SystemClock),
        };
        for (n, checkpoint) in [(3, true), (3, true), (2, true), (2, false)] {
            f.store.append(crate::conformance::drafts(n, "t37")).await.unwrap();
            if checkpoint && cp.run_once().await.unwrap().expect("the head moved").seq == 6 {
                f.backups = f.back_up().await;
            }
        }
        f.keys = serde_json::to_value(receipts.keys().await.unwrap()).unwrap();
        std::fs::write(&f.jwks, f.keys.to_string()).unwrap();
        let claims = assert_genuine_checkpoints(&f.sink().all().await.unwrap(), &f.keys);
        assert_eq!(claims.iter().map(|c| c["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 6, 8]);
        Some(f)
    }

    fn tables(&self) -> TableNames {
        TableNames::with_prefix(&self.prefix)
    }

    fn sink(&self) -> S3Sink {
        S3Sink::new(self.s3.clone(), &self.bucket, CP_PREFIX)
    }

    fn object(&self, seq: u64) -> String {
        format!("{CP_PREFIX}/{}", countersign_core::domain::checkpoint::object_key(seq))
    }

    /// The binary with test credentials, reaching the emulator through the service-specific variables only.
    fn command(&self, endpoints: &[(&str, &str)]) -> tokio::process::Command {
        let mut c = cli::command();
        c.env("AWS_ACCESS_KEY_ID", "AKIDT37TEST")
            .env("AWS_SECRET_ACCESS_KEY", "t37-test-secret")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_SESSION_TOKEN");
        for k in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_S3"] {
            c.env_remove(k);
        }
        for (k, v) in endpoints {
            c.env(k, v);
        }
        c
    }

    async fn run(&self, args: &[&str]) -> Ran {
        let [ddb, s3] = &self.endpoints;
        let mut c = self.command(&[("AWS_ENDPOINT_URL_DYNAMODB", ddb), ("AWS_ENDPOINT_URL_S3", s3)]);
        c.args(args);
        cli::run(c).await
    }

    fn verify_args<'a>(&'a self, checkpoints: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["audit", "verify", "--store", "dynamodb", "--table-prefix", self.prefix.as_str()];
        if !checkpoints.is_empty() {
            args.extend(["--checkpoints", checkpoints, "--jwks", self.jwks.to_str().unwrap()]);
        }
        args.extend_from_slice(extra);
        args
    }

    fn checkpoints_url(&self) -> String {
        format!("s3://{}/{CP_PREFIX}", self.bucket)
    }

    async fn verify(&self, extra: &[&str]) -> Ran {
        self.run(&self.verify_args("", extra)).await
    }

    async fn verify_with_checkpoints(&self, extra: &[&str]) -> Ran {
        let url = self.checkpoints_url();
        self.run(&self.verify_args(&url, extra)).await
    }

    async fn assert_only_checkpoints_see(&self, expect: &str) {
        let plain = self.verify(&[]).await;
        let text = self.verify_with_checkpoints(&[]).await;
        let json = self.verify_with_checkpoints(&["--output", "json"]).await;
        assert_only_checkpoints_saw(&plain, &text, &json, expect);
    }

    // ---- raw access, behind the adapters' backs ----

    async fn audit_item(&self, seq: u64) -> Item {
        self.ddb
            .get_item()
            .table_name(self.tables().audit)
            .key(keys::PK, AttributeValue::S(keys::CHAIN_PK.into()))
            .key(keys::SEQ, AttributeValue::N(seq.to_string()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap_or_else(|| panic!("audit item {seq} exists"))
    }

    /// Rewrites every record from `from` on and re-hashes the chain, so it links and verifies on its own:
    /// `PutItem` over each item, its other attributes kept.
    async fn rewrite_and_rechain(&self, from: u64) {
        let doc = |item: &Item| -> AuditEvent { serde_json::from_str(item[keys::DOC].as_s().unwrap()).unwrap() };
        let last = self.store.last().await.unwrap().unwrap().seq;
        let mut prev = doc(&self.audit_item(from - 1).await).hash;
        for seq in from..=last {
            let mut item = self.audit_item(seq).await;
            let mut e = doc(&item);
            e.details.insert("tag".into(), "rewritten".into());
            e.prev_hash = prev;
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            item.insert(keys::DOC.into(), AttributeValue::S(serde_json::to_string(&e).unwrap()));
            self.ddb.put_item().table_name(self.tables().audit).set_item(Some(item)).send().await.unwrap();
        }
    }

    /// An on-demand backup of each table, as an operator (or anyone allowed `dynamodb:CreateBackup`) takes one.
    async fn back_up(&self) -> Vec<(String, String)> {
        let t = self.tables();
        let mut out = Vec::new();
        for table in [t.policies, t.requests, t.audit] {
            let made = self.ddb.create_backup().table_name(&table).backup_name("t37-at-checkpoint-6").send();
            let arn = made.await.unwrap().backup_details.unwrap().backup_arn;
            out.push((table, arn));
        }
        out
    }

    /// Deletes the three tables and restores each from its backup under its own name, as restoring a backup
    /// in place does (DynamoDB restores into a table that does not exist yet).
    async fn restore_backups(&self) {
        for (table, arn) in &self.backups {
            self.ddb.delete_table().table_name(table).send().await.unwrap();
            let restored =
                self.ddb.restore_table_from_backup().target_table_name(table).backup_arn(arn).send().await.unwrap();
            assert!(restored.table_description.is_some(), "{table} restored");
        }
    }

    async fn get_checkpoint(&self, seq: u64) -> String {
        let got = self.s3.get_object().bucket(&self.bucket).key(self.object(seq)).send().await.unwrap();
        String::from_utf8(got.body.collect().await.unwrap().to_vec()).unwrap()
    }

    /// The versions (and delete markers) stored under checkpoint `seq`'s key: (versions, delete markers).
    async fn versions(&self, seq: u64) -> (usize, usize) {
        let key = self.object(seq);
        let out = self.s3.list_object_versions().bucket(&self.bucket).prefix(&key).send().await.unwrap();
        let versions = out.versions().iter().filter(|v| v.key() == Some(key.as_str())).count();
        let markers = out.delete_markers().iter().filter(|m| m.key() == Some(key.as_str())).count();
        (versions, markers)
    }
}

/// `url` with the loopback address spelled as a name, where the SDK would address a bucket as a subdomain
/// (`BUCKET.localhost`, which does not resolve) unless path-style is forced.
fn by_name(url: &str) -> String {
    url.replacen("://127.0.0.1", "://localhost", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_dynamo_intact_chain_passes_against_its_checkpoints_in_s3() {
    let Some(f) = Fixture::new().await else { return };
    let ran = f.verify_with_checkpoints(&[]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.starts_with("intact:") && ran.stdout.contains("10 record(s), seq 1..10"), "{ran:?}");
    assert_eq!(last_line(&ran), "checkpoints: 3 verified, the newest at seq 8; the chain matches them", "{ran:?}");
    let json = f.verify_with_checkpoints(&["--output", "json"]).await;
    assert_eq!(json.code, 0, "{json:?}");
    let v: Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!((v["intact"].as_bool(), v["last_seq"].as_u64()), (Some(true), Some(10)), "{v}");
    assert_eq!(v["checkpoints"], serde_json::json!({"verified": 3, "newest_seq": 8}));

    // The endpoint by name, given for S3 alone or for every service: S3 must still be addressed path-style.
    let url = f.checkpoints_url();
    let [ddb, s3] = &f.endpoints;
    let (ddb_named, s3_named) = (by_name(ddb), by_name(s3));
    for endpoints in [
        vec![("AWS_ENDPOINT_URL_DYNAMODB", ddb.as_str()), ("AWS_ENDPOINT_URL_S3", s3_named.as_str())],
        vec![("AWS_ENDPOINT_URL", s3_named.as_str()), ("AWS_ENDPOINT_URL_DYNAMODB", ddb_named.as_str())],
    ] {
        let mut c = f.command(&endpoints);
        c.args(f.verify_args(&url, &[]));
        let ran = cli::run(c).await;
        assert_eq!(ran.code, 0, "{endpoints:?}: {ran:?}");
        assert!(last_line(&ran).starts_with("checkpoints: 3 verified"), "{endpoints:?}: {ran:?}");
    }

    let plain = f.verify(&[]).await;
    assert_eq!(plain.code, 0, "{plain:?}");
    assert_eq!(
        last_line(&plain),
        "not checked against checkpoints: truncation and rewrites cannot be detected without them \
         (--checkpoints DIR --jwks FILE)"
    );
    // Another prefix of the same bucket holds no checkpoints: that is not a pass.
    let other = format!("s3://{}/audit/staging", f.bucket);
    let ran = f.run(&f.verify_args(&other, &[])).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("no checkpoints in"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_dynamo_a_rewritten_rehashed_suffix_is_named_by_the_first_checkpoint_it_crosses() {
    let Some(f) = Fixture::new().await else { return };
    f.rewrite_and_rechain(5).await;
    assert_eq!(f.store.read_from(5, 1).await.unwrap()[0].details["tag"], "rewritten");
    f.assert_only_checkpoints_see("record 6 differs from checkpoint 6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_dynamo_deleted_newest_records_are_named_as_a_short_chain() {
    let Some(f) = Fixture::new().await else { return };
    let tamper = DynamoTamper::new(f.ddb.clone(), f.tables().audit);
    for seq in (6..=10).rev() {
        tamper.delete_audit(seq).await;
    }
    assert_eq!(f.store.last().await.unwrap().map(|e| e.seq), Some(5));
    f.assert_only_checkpoints_see("chain ends at 5, checkpoint says 8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_dynamo_tables_restored_from_an_older_backup_are_named_as_a_short_chain_then_a_differing_record() {
    let Some(f) = Fixture::new().await else { return };
    f.restore_backups().await;
    assert_eq!(f.store.last().await.unwrap().map(|e| e.seq), Some(6), "the backups were taken at checkpoint 6");
    f.assert_only_checkpoints_see("chain ends at 6, checkpoint says 8").await;
    // The restored tables go on being used: their new record 8 is not the one checkpoint 8 signed. Written by a
    // fresh store, as a new execution environment has one (a writer that lived through the restore still
    // caches the old head, so it would append at 11 and leave a gap that plain `verify` names).
    let fresh = DynamoStore::new(f.ddb.clone(), f.tables());
    fresh.append(crate::conformance::drafts(3, "after-restore")).await.unwrap();
    assert_eq!(f.store.last().await.unwrap().map(|e| e.seq), Some(9));
    f.assert_only_checkpoints_see("record 8 differs from checkpoint 8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_dynamo_a_checkpoint_forged_under_the_genuine_kid_has_a_bad_signature() {
    let Some(f) = Fixture::new().await else { return };
    // The same `kid`, signed by a key the JWKS does not hold, for a seq past the newest checkpoint (a new key,
    // so its only version is the one the verifier reads).
    let genuine = f.get_checkpoint(8).await;
    let part = |i: usize| -> Value {
        serde_json::from_slice(&B64.decode(genuine.split('.').nth(i).unwrap()).unwrap()).unwrap()
    };
    let mut claims = part(1);
    claims["prev"] = serde_json::json!({"seq": 8, "hash": claims["hash"].clone()});
    claims["seq"] = 10.into();
    claims["count"] = 2.into();
    claims["hash"] = f.store.read_from(10, 1).await.unwrap()[0].hash.clone().into();
    let forged = forge(CHECKPOINT_TYP, part(0)["kid"].as_str().unwrap(), &claims);
    assert!(verify_independently(&forged, &f.keys).is_err(), "a forgery, by the independent check too");
    let put = f.s3.put_object().bucket(&f.bucket).key(f.object(10)).body(forged.clone().into_bytes().into());
    put.send().await.unwrap();
    let ran = f.verify_with_checkpoints(&[]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("checkpoint 10: bad signature"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_dynamo_an_overwritten_or_hidden_checkpoint_is_read_from_its_first_locked_version() {
    let Some(f) = Fixture::new().await else { return };
    // Object Lock keeps versions from being removed, but a plain `PutObject` (without the sink's
    // `If-None-Match`) adds a new current version over a checkpoint, and a `DeleteObject` without a version
    // adds a delete marker (the template's bucket policy denies it; whoever can change that policy can do it).
    // Neither changes what the verifier reads: the first version of each key.
    rewrite_then_resign_is_not_enough(&f).await;
    let deleted = f.s3.delete_object().bucket(&f.bucket).key(f.object(3)).send().await.unwrap();
    assert_eq!(deleted.delete_marker(), Some(true), "{deleted:?}");
    assert_eq!(f.versions(3).await, (1, 1), "the locked version is still there, under a delete marker");
    assert_eq!(f.sink().all().await.unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3, 6, 8]);
    f.assert_only_checkpoints_see("record 6 differs from checkpoint 6").await;
}

/// Rewrites the chain from 5 on and overwrites checkpoint 6 with a new version naming the rewritten record
/// (its signature does not matter: the first version is read).
async fn rewrite_then_resign_is_not_enough(f: &Fixture) {
    let genuine = f.get_checkpoint(6).await;
    f.rewrite_and_rechain(5).await;
    let part = |i: usize| -> Value {
        serde_json::from_slice(&B64.decode(genuine.split('.').nth(i).unwrap()).unwrap()).unwrap()
    };
    let mut claims = part(1);
    claims["hash"] = f.store.read_from(6, 1).await.unwrap()[0].hash.clone().into();
    let forged = forge(CHECKPOINT_TYP, part(0)["kid"].as_str().unwrap(), &claims);
    let put = f.s3.put_object().bucket(&f.bucket).key(f.object(6)).body(forged.clone().into_bytes().into());
    put.send().await.unwrap();
    assert_eq!(f.get_checkpoint(6).await, forged, "a plain GetObject now answers the overwrite");
    assert_eq!(f.versions(6).await, (2, 0), "the genuine version is still stored under the forged one");
    assert_eq!(f.sink().all().await.unwrap()[1].1, genuine, "the sink reads the first version");
}
