use super::*;

pub const EXAMPLE: &str = include_str!("../../../infra/policies.example.yaml");
