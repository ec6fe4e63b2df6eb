//! Table creation for local runs, tests and first deployments without SAM. The shapes here are exactly
//! what `template.yaml` declares; a table that already exists must have the same keys and indexes.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;

use super::error::{build_error, from_sdk};
use super::keys::*;
use super::TableNames;
use countersign_core::ports::StoreError;

const WAIT_FOR_ACTIVE: Duration = Duration::from_secs(300);
const POLL_EVERY: Duration = Duration::from_millis(250);

/// One table's shape: (hash, range) key names, attribute types, GSIs (all projected `ALL`), TTL.
struct Shape {
    name: String,
    hash: &'static str,
    range: Option<&'static str>,
    attributes: &'static [(&'static str, ScalarTypeName)],
    indexes: &'static [(&'static str, &'static str, &'static str)],
    ttl: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum ScalarTypeName {
    S,
    N,
}

impl ScalarTypeName {
    fn sdk(self) -> ScalarAttributeType {
        match self {
            Self::S => ScalarAttributeType::S,
            Self::N => ScalarAttributeType::N,
        }
    }
}

fn shapes(t: &TableNames) -> [Shape; 3] {
    use ScalarTypeName::{N, S};
    [
        Shape {
            name: t.policies.clone(),
            hash: PK,
            range: Some(SK),
            attributes: &[(PK, S), (SK, S)],
            indexes: &[],
            ttl: None,
        },
        Shape {
            name: t.requests.clone(),
            hash: PK,
            range: Some(SK),
            attributes: &[
                (PK, S),
                (SK, S),
                (GSI1_PK, S),
                (GSI1_SK, S),
                (GSI2_PK, S),
                (GSI2_SK, S),
                (GSI3_PK, S),
                (GSI3_SK, S),
            ],
            indexes: &[
                (INDEX_BY_PRINCIPAL, GSI1_PK, GSI1_SK),
                (INDEX_PENDING, GSI2_PK, GSI2_SK),
                (INDEX_NOTIFY_DUE, GSI3_PK, GSI3_SK),
            ],
            ttl: Some(TTL),
        },
        Shape {
            name: t.audit.clone(),
            hash: PK,
            range: Some(SEQ),
            attributes: &[(PK, S), (SEQ, N), (REQUEST_ID, S)],
            indexes: &[(INDEX_BY_REQUEST, REQUEST_ID, SEQ)],
            ttl: None,
        },
    ]
}

fn key_schema(hash: &str, range: Option<&str>) -> Result<Vec<KeySchemaElement>, StoreError> {
    let mut out = vec![KeySchemaElement::builder()
        .attribute_name(hash)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| build_error("key schema", e))?];
    if let Some(r) = range {
        out.push(
            KeySchemaElement::builder()
                .attribute_name(r)
                .key_type(KeyType::Range)
                .build()
                .map_err(|e| build_error("key schema", e))?,
        );
    }
    Ok(out)
}

/// Creates the policies, requests and audit tables (on-demand billing) and waits until they and their
/// indexes are `ACTIVE`, then enables TTL on the requests table. Tables that already exist are accepted
/// if their keys and indexes match; any difference is an error naming the table.
pub async fn create_tables(client: &Client, tables: &TableNames) -> Result<(), StoreError> {
    for shape in shapes(tables) {
        create_one(client, &shape).await?;
    }
    for shape in shapes(tables) {
        let desc = wait_active(client, &shape.name).await?;
        check_shape(&shape, &desc)?;
        if let Some(attr) = shape.ttl {
            ensure_ttl(client, &shape.name, attr).await?;
        }
    }
    Ok(())
}

async fn create_one(client: &Client, shape: &Shape) -> Result<(), StoreError> {
    let mut req = client
        .create_table()
        .table_name(&shape.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(shape.hash, shape.range)?));
    for (name, ty) in shape.attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(*name)
                .attribute_type(ty.sdk())
                .build()
                .map_err(|e| build_error("attribute definition", e))?,
        );
    }
    for (index, hash, range) in shape.indexes {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(*index)
                .set_key_schema(Some(key_schema(hash, Some(range))?))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(|e| build_error("index", e))?,
        );
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.as_service_error(), Some(CreateTableError::ResourceInUseException(_))) => Ok(()),
        Err(e) => Err(from_sdk("CreateTable", e)),
    }
}

async fn wait_active(client: &Client, table: &str) -> Result<TableDescription, StoreError> {
    let started = Instant::now();
    loop {
        let out = client.describe_table().table_name(table).send().await.map_err(|e| from_sdk("DescribeTable", e))?;
        if let Some(desc) = out.table {
            let table_active = desc.table_status() == Some(&TableStatus::Active);
            let indexes_active = desc
                .global_secondary_indexes()
                .iter()
                .all(|i| i.index_status().is_none_or(|s| s == &IndexStatus::Active));
            if table_active && indexes_active {
                return Ok(desc);
            }
        }
        if started.elapsed() > WAIT_FOR_ACTIVE {
            return Err(StoreError::Other(format!(
                "table {table} did not become ACTIVE within {} s",
                WAIT_FOR_ACTIVE.as_secs()
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn described_keys(keys: &[KeySchemaElement]) -> Vec<(String, String)> {
    let mut out: Vec<_> =
        keys.iter().map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string())).collect();
    out.sort();
    out
}

fn wanted_keys(hash: &str, range: Option<&str>) -> Vec<(String, String)> {
    let mut out = vec![(hash.to_string(), "HASH".to_string())];
    if let Some(r) = range {
        out.push((r.to_string(), "RANGE".to_string()));
    }
    out.sort();
    out
}

fn check_shape(shape: &Shape, desc: &TableDescription) -> Result<(), StoreError> {
    let differs = |what: String| {
        StoreError::Other(format!(
            "table {} exists with a different shape: {what}; delete it or use another prefix",
            shape.name
        ))
    };
    if described_keys(desc.key_schema()) != wanted_keys(shape.hash, shape.range) {
        return Err(differs("key schema".into()));
    }
    for (name, ty) in shape.attributes {
        let found = desc.attribute_definitions().iter().find(|a| a.attribute_name() == *name);
        if found.is_some_and(|a| a.attribute_type() != &ty.sdk()) {
            return Err(differs(format!("attribute {name} has another type")));
        }
    }
    let described = desc.global_secondary_indexes();
    if described.len() != shape.indexes.len() {
        return Err(differs(format!(
            "{} global secondary indexes instead of {}",
            described.len(),
            shape.indexes.len()
        )));
    }
    for (index, hash, range) in shape.indexes {
        let Some(found) = described.iter().find(|i| i.index_name() == Some(*index)) else {
            return Err(differs(format!("index {index} is missing")));
        };
        if described_keys(found.key_schema()) != wanted_keys(hash, Some(range)) {
            return Err(differs(format!("index {index} has other keys")));
        }
        if found.projection().and_then(|p| p.projection_type()) != Some(&ProjectionType::All) {
            return Err(differs(format!("index {index} does not project all attributes")));
        }
    }
    Ok(())
}

async fn ensure_ttl(client: &Client, table: &str, attr: &str) -> Result<(), StoreError> {
    let out =
        client.describe_time_to_live().table_name(table).send().await.map_err(|e| from_sdk("DescribeTimeToLive", e))?;
    if let Some(d) = out.time_to_live_description() {
        let on = matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling));
        if on {
            return match d.attribute_name() {
                Some(a) if a == attr => Ok(()),
                other => Err(StoreError::Other(format!(
                    "table {table} has TTL on attribute {}, expected {attr}",
                    other.unwrap_or("(none)")
                ))),
            };
        }
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attr)
                .build()
                .map_err(|e| build_error("TTL specification", e))?,
        )
        .send()
        .await
        .map_err(|e| from_sdk("UpdateTimeToLive", e))?;
    Ok(())
}
