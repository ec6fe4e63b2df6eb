//! Row 37 in AWS: audit checkpoints through the real adapter (`countersign_aws::checkpoints::S3Sink`) on the
//! emulator's S3, in a bucket created as `template.yaml` creates it: Object Lock with a default COMPLIANCE
//! retention.
//!
//! - Checkpoints are listed in chain order (every page of the listing) and `latest` is the newest.
//! - A checkpoint is written once: a second `put` of the same seq is refused and the first stays.
//! - Object Lock holds: deleting the stored version (its `VersionId` from `HeadObject`) is refused.

use countersign_aws::checkpoints::sdk as s3;
use countersign_aws::checkpoints::{S3Sink, CONTENT_TYPE, MAX_CHECKPOINT_BYTES};
use countersign_core::ports::{CheckpointSink, StoreError};
use countersign_testkit::emulator::{endpoint, sdk_config, Service};

use s3::types::{
    DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
};

// ---- helpers -------------------------------------------------------------------------------------------

/// An S3 client on the emulator (path-style: moto has no bucket subdomains on loopback); `None` when none is
/// configured outside CI (a failure under `CI=true`).
pub(crate) async fn s3_client() -> Option<s3::Client> {
    let endpoint = endpoint(Service::S3)?;
    let conf = s3::config::Builder::from(&sdk_config(&endpoint).await).force_path_style(true).build();
    Some(s3::Client::from_conf(conf))
}

/// A fresh bucket with Object Lock and a default COMPLIANCE retention of one day.
pub(crate) async fn locked_bucket(client: &s3::Client) -> String {
    let bucket = format!("countersign-checkpoints-{}", ulid::Ulid::new().to_string().to_lowercase());
    client.create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(true).send().await.expect("CreateBucket");
    let rule = ObjectLockRule::builder()
        .default_retention(DefaultRetention::builder().mode(ObjectLockRetentionMode::Compliance).days(1).build())
        .build();
    client
        .put_object_lock_configuration()
        .bucket(&bucket)
        .object_lock_configuration(
            ObjectLockConfiguration::builder().object_lock_enabled(ObjectLockEnabled::Enabled).rule(rule).build(),
        )
        .send()
        .await
        .expect("PutObjectLockConfiguration");
    bucket
}

// ---- tests ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn t37_s3_checkpoints_are_listed_in_chain_order_and_written_once() {
    let Some(client) = s3_client().await else { return };
    let bucket = locked_bucket(&client).await;
    let sink = S3Sink::new(client.clone(), &bucket, "");
    assert_eq!(sink.latest().await.unwrap(), None, "an empty bucket has no checkpoint");
    assert_eq!(sink.all().await.unwrap(), Vec::new());

    // Written out of order on purpose; 12 > 3 numerically but "12" < "3" lexically without the padding.
    sink.put(3, "jws-three").await.unwrap();
    sink.put(12, "jws-twelve").await.unwrap();
    // Not a checkpoint: skipped, as the directory sink skips other files.
    client.put_object().bucket(&bucket).key("checkpoints/README").body(b"x".to_vec().into()).send().await.unwrap();

    assert_eq!(sink.latest().await.unwrap().as_deref(), Some("jws-twelve"));
    assert_eq!(sink.all().await.unwrap(), vec![(3, "jws-three".to_string()), (12, "jws-twelve".to_string())]);

    let refused = sink.put(12, "forged").await;
    match &refused {
        Err(StoreError::Other(why)) => assert!(why.contains("already exists"), "{why}"),
        other => panic!("a second put of checkpoint 12 must be refused, got {other:?}"),
    }
    assert_eq!(sink.latest().await.unwrap().as_deref(), Some("jws-twelve"), "the first checkpoint stays");

    let head = client.head_object().bucket(&bucket).key("checkpoints/00000000000000000012.jwt").send().await.unwrap();
    assert_eq!(head.content_type(), Some(CONTENT_TYPE));
    assert_eq!(head.object_lock_mode(), Some(&s3::types::ObjectLockMode::Compliance), "the default retention applies");
    assert!(head.object_lock_retain_until_date().is_some());
}

#[tokio::test]
async fn t37_s3_checkpoints_are_read_from_every_page_under_the_prefix() {
    let Some(client) = s3_client().await else { return };
    let bucket = locked_bucket(&client).await;
    let sink = S3Sink::new(client.clone(), &bucket, "team-a");
    // Another prefix in the same bucket is another chain.
    S3Sink::new(client.clone(), &bucket, "team-b/").put(9999, "other chain").await.unwrap();
    // More than one page of ListObjectsV2 (moto's page is 1000 keys): 1001 checkpoints.
    for seq in 1..=1001u64 {
        sink.put(seq, &format!("jws-{seq}")).await.unwrap();
    }
    let all = sink.all().await.unwrap();
    assert_eq!(all.len(), 1001);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
    assert_eq!(sink.latest().await.unwrap().as_deref(), Some("jws-1001"));
}

#[tokio::test]
async fn t37_s3_oversized_checkpoints_are_neither_written_nor_read() {
    let Some(client) = s3_client().await else { return };
    let bucket = locked_bucket(&client).await;
    let sink = S3Sink::new(client.clone(), &bucket, "");
    let big = "a".repeat(MAX_CHECKPOINT_BYTES + 1);
    assert!(matches!(sink.put(1, &big).await, Err(StoreError::Other(_))));
    client
        .put_object()
        .bucket(&bucket)
        .key("checkpoints/00000000000000000002.jwt")
        .body(big.into_bytes().into())
        .send()
        .await
        .unwrap();
    assert!(matches!(sink.latest().await, Err(StoreError::Corrupt(_))), "a 16 KiB+ object is not read");
}

#[tokio::test]
async fn t37_object_lock_refuses_deleting_a_stored_checkpoint_version() {
    let Some(client) = s3_client().await else { return };
    let bucket = locked_bucket(&client).await;
    let sink = S3Sink::new(client.clone(), &bucket, "");
    sink.put(7, "jws-seven").await.unwrap();
    let key = "checkpoints/00000000000000000007.jwt";
    let head = client.head_object().bucket(&bucket).key(key).send().await.unwrap();
    let version = head.version_id().expect("an Object Lock bucket is versioned").to_string();

    let deleted = client.delete_object().bucket(&bucket).key(key).version_id(&version).send().await;
    assert!(deleted.is_err(), "COMPLIANCE retention must refuse deleting version {version}");
    // Not even with the governance bypass: COMPLIANCE has none.
    let bypass =
        client.delete_object().bucket(&bucket).key(key).version_id(&version).bypass_governance_retention(true).send();
    assert!(bypass.await.is_err(), "COMPLIANCE retention has no bypass");

    assert_eq!(sink.latest().await.unwrap().as_deref(), Some("jws-seven"), "the checkpoint is still there");
    let still = client.head_object().bucket(&bucket).key(key).version_id(&version).send().await;
    assert!(still.is_ok(), "the locked version still exists");
}

#[tokio::test]
async fn t37_s3_latest_lists_only_after_the_newest_it_knows_and_still_sees_another_writers() {
    let Some(client) = s3_client().await else { return };
    let bucket = locked_bucket(&client).await;
    let warm = S3Sink::new(client.clone(), &bucket, "p");
    warm.put(3, "jws-three").await.unwrap();
    assert_eq!(warm.latest().await.unwrap().as_deref(), Some("jws-three"), "what it wrote itself");
    // Another process (a second sweeper, a new execution environment) writes newer ones.
    let other = S3Sink::new(client.clone(), &bucket, "p");
    other.put(12, "jws-twelve").await.unwrap();
    other.put(100, "jws-hundred").await.unwrap();
    assert_eq!(warm.latest().await.unwrap().as_deref(), Some("jws-hundred"));
    assert_eq!(warm.latest().await.unwrap().as_deref(), Some("jws-hundred"), "nothing newer: the one it knows");
    let cold = S3Sink::new(client, &bucket, "p");
    assert_eq!(cold.latest().await.unwrap().as_deref(), Some("jws-hundred"), "a cold sink lists everything");
    assert_eq!(cold.all().await.unwrap().len(), 3);
}
