//! Row 37 (issue 17): checkpoints written from the real chain,
//! signed by the local key, kept in local mode's directory, and the chain checked against them.

use std::sync::Arc;

use countersign_core::domain::checkpoint::{CheckpointBreak, CheckpointCheck, CheckpointClaims};
use countersign_core::domain::receipt::parse_compact;
use countersign_core::ports::CheckpointSink;
use countersign_core::service::checkpoints::Checkpointer;
use countersign_local::checkpoints::DirSink;
use countersign_testkit::app::{local_receipts, spawn_app, StoreKind, DEPLOY_ARN};
use serde_json::json;

#[tokio::test]
async fn t37_checkpoints_follow_the_head_and_name_a_truncated_or_rewritten_chain() {
    let Some(t) = spawn_app(StoreKind::Embedded).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(DirSink { root: dir.path().to_path_buf() });
    let cp = Checkpointer {
        stores: t.app.stores.clone(),
        sink: sink.clone(),
        receipts: local_receipts(),
        clock: t.clock.clone(),
    };
    let first = cp.run_once().await.unwrap().expect("a first checkpoint");
    assert!(cp.run_once().await.unwrap().is_none(), "the head did not move");
    let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "staging"})).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let second = cp.run_once().await.unwrap().expect("the head moved");
    assert_eq!(second.prev.as_ref().map(|p| p.seq), Some(first.seq));
    let claims: Vec<CheckpointClaims> = sink
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, jws)| serde_json::from_value(parse_compact(&jws).unwrap().claims).unwrap())
        .collect();
    let chain = t.audit().await;
    let run = |records: &[countersign_core::domain::AuditEvent]| -> Result<(), CheckpointBreak> {
        let mut k = CheckpointCheck::new(claims.clone())?;
        for e in records {
            k.observe(e)?;
        }
        k.finish()
    };
    assert_eq!(run(&chain), Ok(()));
    let cut = usize::try_from(first.seq).unwrap();
    assert_eq!(
        run(&chain[..cut]).unwrap_err().to_string(),
        format!("chain ends at {}, checkpoint says {}", first.seq, second.seq)
    );
    let mut rewritten = chain.clone();
    rewritten.last_mut().unwrap().hash = "0".repeat(64);
    assert_eq!(run(&rewritten).unwrap_err().to_string(), format!("record {0} differs from checkpoint {0}", second.seq));
}

#[tokio::test]
async fn t37_a_checkpoint_that_cannot_be_written_is_owed_blocks_nothing_and_is_written_next_run() {
    let Some(t) = spawn_app(StoreKind::Embedded).await else { return };
    let dir = tempfile::tempdir().unwrap();
    // `checkpoints` is a file, so no checkpoint can be written below it.
    let blocked = dir.path().join("checkpoints");
    std::fs::write(&blocked, "not a directory").unwrap();
    let sweeper = countersign_core::service::sweeper::Sweeper {
        checkpoints: Some(Checkpointer {
            stores: t.app.stores.clone(),
            sink: Arc::new(DirSink { root: dir.path().to_path_buf() }),
            receipts: local_receipts(),
            clock: t.clock.clone(),
        }),
        ..t.app.sweeper()
    };
    let a = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "staging"})).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let owed = sweeper.run_once().await.expect("a failed checkpoint does not fail the sweep");
    assert!(owed.checkpoint_owed && owed.checkpoint.is_none() && owed.errors >= 1, "{owed:?}");
    let b = t.create(DEPLOY_ARN, &json!({"action": "deploy", "environment": "staging"})).await;
    assert_eq!(b.status, 201, "requests are still accepted while a checkpoint is owed: {}", b.json);

    std::fs::remove_file(&blocked).unwrap();
    let head = t.audit().await.last().unwrap().seq;
    let written = sweeper.run_once().await.unwrap();
    assert_eq!(written.checkpoint, Some(head), "the next run writes the owed checkpoint, up to the head");
    assert!(!written.checkpoint_owed, "{written:?}");
    let idle = sweeper.run_once().await.unwrap();
    assert_eq!((idle.checkpoint, idle.checkpoint_owed), (None, false), "the head did not move: nothing owed");
}

#[tokio::test]
async fn t37_a_chain_shorter_than_its_newest_checkpoint_is_owed_and_never_checkpointed_backwards() {
    use countersign_core::ports::{AuditLog, Stores, SystemClock};
    use countersign_core::service::checkpoints::CheckpointError;
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(DirSink { root: dir.path().to_path_buf() });
    let checkpointer = |store: Arc<countersign_sqlite::EmbeddedStore>| Checkpointer {
        stores: Stores::from_one(store),
        sink: sink.clone(),
        receipts: local_receipts(),
        clock: Arc::new(SystemClock),
    };
    // The chain as it was: 10 records, checkpointed at 10.
    let (_a, before) = countersign_testkit::stores::embedded();
    before.append(crate::conformance::drafts(10, "t37")).await.unwrap();
    assert_eq!(checkpointer(before).run_once().await.unwrap().map(|c| c.seq), Some(10));
    // The same sink over an older copy of the chain (a restore): 4 records.
    let (_b, restored) = countersign_testkit::stores::embedded();
    restored.append(crate::conformance::drafts(4, "t37")).await.unwrap();
    match checkpointer(restored).run_once().await {
        Err(CheckpointError::Behind { head: 4, newest: 10 }) => {}
        other => panic!("a shorter chain must be reported, not checkpointed: {other:?}"),
    }
    assert_eq!(sink.all().await.unwrap().len(), 1, "nothing was written");
}
