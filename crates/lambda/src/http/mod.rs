//! HTTP routers: the request API (`/v1/...`) and the Slack interactions endpoint. The same routers run inside
//! `lambda_http::run` and in local mode. Identity comes only from the API Gateway request context.

pub mod api;
pub mod error;
pub mod identity;
pub mod slack;

pub use error::ApiError;
