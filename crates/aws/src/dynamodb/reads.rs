//! The reads of the hot paths, each one round trip: a request with the policy generation (`BatchGetItem`
//! across the requests and policies tables), and a request's history counted from index entries alone.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::KeysAndAttributes;

use super::error::{build_error, from_sdk};
use super::items::{self, s, Item};
use super::keys::*;
use super::{backoff, DynamoStore, MAX_WRITE_ATTEMPTS};
use countersign_core::domain::{ApprovalRequest, RequestId, Status, Timestamp};
use countersign_core::ports::{Outcome, StoreError};

/// The newest earlier request of the same kind, as its index entry shows it.
pub(super) struct Match {
    /// Its partition key (`REQ#{id}`).
    pub pk: String,
    /// Its status, expiry and creation time, when the entry carries them.
    pub outcome: Option<Outcome>,
}

/// A key of the requests or policies table.
fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

impl DynamoStore {
    /// The request and the policy generation in one strongly consistent `BatchGetItem` (retrying the keys
    /// DynamoDB left unprocessed, bounded).
    pub(super) async fn request_and_generation(
        &self,
        id: &RequestId,
    ) -> Result<(Option<ApprovalRequest>, u64), StoreError> {
        let request = KeysAndAttributes::builder()
            .keys(key(&request_pk(id), REQUEST_SK))
            .consistent_read(true)
            .build()
            .map_err(|e| build_error("batch get (request)", e))?;
        let generation = KeysAndAttributes::builder()
            .keys(key(POLICY_SET_PK, GENERATION_SK))
            .projection_expression("#pk, #sk, #g")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_names("#g", GENERATION)
            .consistent_read(true)
            .build()
            .map_err(|e| build_error("batch get (generation)", e))?;
        let mut wanted =
            HashMap::from([(self.tables.requests.clone(), request), (self.tables.policies.clone(), generation)]);
        let (mut request_item, mut generation_item) = (None, None);
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(wanted))
                .send()
                .await
                .map_err(|e| from_sdk("BatchGetItem(request, policy generation)", e))?;
            for (table, found) in out.responses.unwrap_or_default() {
                let Some(item) = found.into_iter().next() else { continue };
                if table == self.tables.requests {
                    request_item = Some(item);
                } else if table == self.tables.policies {
                    generation_item = Some(item);
                }
            }
            match out.unprocessed_keys {
                Some(left) if !left.is_empty() => {
                    wanted = left;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                _ => {
                    let request = request_item.as_ref().map(items::request_from_item).transpose()?;
                    return Ok((request, items::generation_from_item(generation_item.as_ref())?));
                }
            }
        }
        Err(StoreError::Other(format!("BatchGetItem left keys unprocessed {MAX_WRITE_ATTEMPTS} times (throttled)")))
    }

    /// Counts `r`'s earlier requests of the same kind from the `by-principal` index, on its keys and the
    /// `action`/`environment`/`status`/`expires_at` copies (projected alone, so no document is sent or
    /// parsed): the count and the newest match. `None` when the window holds an item written before the
    /// action and environment copies existed (the caller then reads the documents).
    pub(super) async fn count_same_kind(
        &self,
        r: &ApprovalRequest,
        since: Timestamp,
        limit: usize,
    ) -> Result<Option<(u32, Option<Match>)>, StoreError> {
        let before = time_id_key(r.created_at, &r.id);
        let (action, environment) = (r.action.as_str(), r.environment.as_str());
        let mut values = Item::new();
        values.insert(":pk".into(), s(r.requester.principal.as_str()));
        values.insert(":since".into(), s(time_key(since)));
        let (mut seen, mut count, mut newest) = (0usize, 0u32, None::<Match>);
        let mut start: Option<Item> = None;
        while seen < limit {
            let page = self
                .client
                .query()
                .table_name(&self.tables.requests)
                .index_name(INDEX_BY_PRINCIPAL)
                .key_condition_expression("#pk = :pk AND #sk >= :since")
                .projection_expression("#id, #sk, #a, #e, #st, #x")
                .expression_attribute_names("#pk", GSI1_PK)
                .expression_attribute_names("#sk", GSI1_SK)
                .expression_attribute_names("#id", PK)
                .expression_attribute_names("#a", ACTION)
                .expression_attribute_names("#e", ENVIRONMENT)
                .expression_attribute_names("#st", STATUS)
                .expression_attribute_names("#x", EXPIRES_AT)
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .limit(self.page_limit(limit - seen))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk("Query(requests history)", e))?;
            for item in page.items().iter().take(limit - seen) {
                seen += 1;
                let (Some(a), Some(e)) = (item.get(ACTION), item.get(ENVIRONMENT)) else {
                    return Ok(None);
                };
                let same = a.as_s().is_ok_and(|a| a == action) && e.as_s().is_ok_and(|e| e == environment);
                let sk = items::get_s(item, GSI1_SK)?;
                if same && sk < before.as_str() {
                    count = count.saturating_add(1);
                    if newest.is_none() {
                        newest = Some(Match { pk: items::get_s(item, PK)?.to_string(), outcome: outcome(item, sk) });
                    }
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(Some((count, newest)))
    }

    /// The request under partition key `pk`, read consistently; it must exist.
    pub(super) async fn read_newest(&self, pk: &str) -> Result<ApprovalRequest, StoreError> {
        self.get_item("GetItem(request)", pk.to_string(), REQUEST_SK)
            .await?
            .map(|item| items::request_from_item(&item))
            .transpose()?
            .ok_or_else(|| StoreError::Other(format!("request {pk} vanished in a read")))
    }
}

/// Status, expiry and creation time from an index entry (creation from its `{time_key}#{id}` sort key);
/// `None` if one of them is missing or malformed (the caller reads the document instead).
fn outcome(item: &Item, sk: &str) -> Option<Outcome> {
    let status = Status::parse(item.get(STATUS)?.as_s().ok()?)?;
    let expires_at = item.get(EXPIRES_AT)?.as_n().ok()?.parse::<i64>().ok()?;
    let created_at = sk.get(..TIME_KEY_WIDTH)?.parse::<i64>().ok()?;
    Some(Outcome {
        status,
        expires_at: Timestamp::from_unix_millis(expires_at),
        created_at: Timestamp::from_unix_millis(created_at),
    })
}
