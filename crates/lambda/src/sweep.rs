//! The sweeper Lambda's handler: one sweep, its log line, and its metrics in CloudWatch's embedded metric
//! format (EMF), printed to stdout where Lambda's log stream turns them into metrics without an API call.
//!
//! `Countersign/CheckpointOwed` (dimension `FunctionName`) is 1 for a run that ended owing a checkpoint
//! (issue 17: the head moved and none could be written) and 0 otherwise. The stack's
//! `CheckpointOwedAlarm` fires when three consecutive runs owed one. `Countersign/EventsOwed` counts the
//! decision events still owed when the run's relay stopped at a failure (issue 19; `EventsOwedAlarm`: five
//! runs in a row). Nothing here can fail a sweep.

use countersign_core::domain::Timestamp;
use countersign_core::service::sweeper::{SweepReport, Sweeper};
use serde_json::{json, Value};

/// The metrics namespace, and the metric the checkpoint alarm watches (template.yaml names both).
pub const METRICS_NAMESPACE: &str = "Countersign";
pub const CHECKPOINT_OWED: &str = "CheckpointOwed";
/// Decision events still owed when the run's relay stopped at a failure (issue 19): 0 on a healthy run.
pub const EVENTS_OWED: &str = "EventsOwed";

/// Runs one sweep; prints its metrics; returns the report as the invocation's result.
pub async fn handle(sweeper: &Sweeper) -> Result<Value, lambda_http::Error> {
    let report = sweeper.run_once().await?;
    tracing::info!(
        expired = report.expired,
        relayed = report.relayed,
        reminded = report.reminded,
        unused = report.unused,
        checkpoint = ?report.checkpoint,
        checkpoint_owed = report.checkpoint_owed,
        published = report.published,
        events_owed = report.events_owed,
        errors = report.errors,
        "sweep done"
    );
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "countersign-sweeper".into());
    println!("{}", emf(&report, &function, sweeper.clock.now()));
    Ok(serde_json::to_value(&report)?)
}

/// One EMF document: the `_aws` metadata naming the metrics, and their values at the top level.
pub fn emf(report: &SweepReport, function: &str, now: Timestamp) -> Value {
    let count = |name: &str| json!({"Name": name, "Unit": "Count"});
    json!({
        "_aws": {
            "Timestamp": now.unix_millis(),
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": [count(CHECKPOINT_OWED), count("SweepErrors"), count("Expired"), count("Relayed"),
                    count(EVENTS_OWED), count("EventsPublished")],
            }],
        },
        "FunctionName": function,
        CHECKPOINT_OWED: u8::from(report.checkpoint_owed),
        "SweepErrors": report.errors,
        "Expired": report.expired,
        "Relayed": report.relayed,
        EVENTS_OWED: report.events_owed,
        "EventsPublished": report.published,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn now0() -> Timestamp {
        Timestamp::from_unix_millis(0)
    }

    #[test]
    fn a_run_owing_a_checkpoint_publishes_checkpoint_owed_one_in_emf() {
        let owed = SweepReport { checkpoint_owed: true, errors: 1, ..SweepReport::default() };
        let doc = emf(&owed, "stack-SweeperFunction-abc", Timestamp::from_unix_millis(1_700_000_000_000));
        assert_eq!(doc["CheckpointOwed"], 1);
        assert_eq!(doc["FunctionName"], "stack-SweeperFunction-abc");
        let meta = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(meta["Namespace"], "Countersign");
        assert_eq!(meta["Dimensions"], json!([["FunctionName"]]));
        // Every metric named in the metadata has a number at the top level, as EMF requires.
        for m in meta["Metrics"].as_array().unwrap() {
            assert!(doc[m["Name"].as_str().unwrap()].is_number(), "{m}");
        }
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        let fine =
            emf(&SweepReport { checkpoint: Some(9), ..SweepReport::default() }, "f", Timestamp::from_unix_millis(0));
        assert_eq!(fine["CheckpointOwed"], 0);
        let behind = emf(&SweepReport { events_owed: 14, published: 10, ..SweepReport::default() }, "f", now0());
        assert_eq!((behind["EventsOwed"].as_u64(), behind["EventsPublished"].as_u64()), (Some(14), Some(10)));
    }
}
