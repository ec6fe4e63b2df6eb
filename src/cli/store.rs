//! `countersign store init`, and opening the store that operator commands work on.

use std::sync::Arc;

use countersign_aws::dynamodb::{create_tables, DynamoStore, TableNames};
use countersign_core::domain::{Actor, Timestamp};
use countersign_core::ports::{Clock, Stores, SystemClock};
use countersign_sqlite::EmbeddedStore;

use super::{exit, CliError, StoreArgs, StoreKind};

pub struct OpenStore {
    pub stores: Stores,
    /// Where, for messages ("DynamoDB tables cs-*", "embedded store .countersign/countersign.db").
    pub description: String,
    aws: Option<aws_config::SdkConfig>,
}

impl OpenStore {
    pub fn now(&self) -> Timestamp {
        SystemClock.now()
    }

    /// Who is acting, for audit records: the caller's ARN from STS on DynamoDB; the local user otherwise.
    pub async fn actor(&self) -> Result<Actor, CliError> {
        match &self.aws {
            Some(conf) => {
                let id = aws_sdk_sts::Client::new(conf)
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| CliError::failed("cannot determine who you are (sts:GetCallerIdentity)", &e))?;
                let arn =
                    id.arn().ok_or_else(|| CliError::new(exit::FAILED, "sts:GetCallerIdentity returned no ARN"))?;
                Ok(Actor::aws(arn))
            }
            None => {
                let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
                Ok(Actor::cli(&format!("local:{user}")))
            }
        }
    }
}

pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}

fn table_names(args: &StoreArgs) -> Result<TableNames, CliError> {
    if let Some(p) = &args.table_prefix {
        if p.is_empty()
            || p.len() > 200
            || !p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(CliError::new(exit::USAGE, format!("--table-prefix {p:?}: use letters, digits, _ - .")));
        }
        return Ok(TableNames::with_prefix(p));
    }
    let var = |k: &str| {
        std::env::var(k).map_err(|_| {
            CliError::new(
                exit::USAGE,
                format!("--store dynamodb needs --table-prefix or {k} (and the other table variables)"),
            )
        })
    };
    Ok(TableNames {
        policies: var("COUNTERSIGN_POLICIES_TABLE")?,
        requests: var("COUNTERSIGN_REQUESTS_TABLE")?,
        audit: var("COUNTERSIGN_AUDIT_TABLE")?,
    })
}

impl OpenStore {
    /// The whole audit trail, in chain order (for `policy history` and `audit report`, which replay it).
    pub async fn whole_trail(&self) -> Result<Vec<countersign_core::domain::AuditEvent>, CliError> {
        let mut records = Vec::new();
        let mut from = 0;
        loop {
            let page =
                self.stores.audit.read_from(from, 1000).await.map_err(|e| {
                    CliError::failed(&format!("cannot read the audit trail of {}", self.description), &e)
                })?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            records.extend(page);
        }
        Ok(records)
    }
}

pub async fn open(args: &StoreArgs) -> Result<OpenStore, CliError> {
    match args.store {
        StoreKind::Dynamodb => {
            let tables = table_names(args)?;
            let conf = aws_config().await;
            let description = format!("DynamoDB tables {}, {}, {}", tables.policies, tables.requests, tables.audit);
            let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&conf), tables);
            Ok(OpenStore { stores: Stores::from_one(Arc::new(store)), description, aws: Some(conf) })
        }
        StoreKind::Local => {
            let store = EmbeddedStore::open(&args.data_dir).map_err(|e| {
                CliError::failed(&format!("cannot open the embedded store in {}", args.data_dir.display()), &e)
            })?;
            let description = format!("embedded store {}", store.db_path().display());
            Ok(OpenStore { stores: Stores::from_one(Arc::new(store)), description, aws: None })
        }
    }
}

pub async fn init(args: &StoreArgs) -> Result<u8, CliError> {
    match args.store {
        StoreKind::Dynamodb => {
            let tables = table_names(args)?;
            let conf = aws_config().await;
            create_tables(&aws_sdk_dynamodb::Client::new(&conf), &tables)
                .await
                .map_err(|e| CliError::failed("cannot create the DynamoDB tables", &e))?;
            println!("DynamoDB tables ready: {}, {}, {}", tables.policies, tables.requests, tables.audit);
        }
        StoreKind::Local => {
            let store = open(args).await?;
            println!("Ready: {}", store.description);
        }
    }
    Ok(exit::OK)
}
