//! The deployment's security posture, read from `template.yaml`, `infra/caller-policy.json` and
//! `infra/slack-app-manifest.yaml` themselves: IAM auth and the resource policy of the request API, the
//! protection of every table, least-privilege function roles, the append-only audit table, the Lambda
//! runtime, the Slack signing secret readable by slack-interactions alone (row 28), reserved concurrency and
//! the WAF rate rule on the Slack endpoint (row 38), the receipt key only request-api and the sweeper may sign
//! with (rows 35, 36, 37), the Object Lock bucket of the audit checkpoints that nobody may delete from and only
//! the sweeper writes to (row 37). A change that weakens any of these fails here before it reaches an account.
//!
//! CloudFormation's short forms (`!Ref`, `!Sub`, `!GetAtt`, `!If`, …) are YAML tags; they are rewritten
//! to the long forms (`Ref`, `Fn::Sub`, …) first, so every check reads one shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_yaml::{Mapping, Value};

// --- loading ---------------------------------------------------------------------------------------------

fn read(rel: &str) -> String {
    let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn template() -> &'static Value {
    static T: OnceLock<Value> = OnceLock::new();
    T.get_or_init(|| {
        let raw: Value = serde_yaml::from_str(&read("template.yaml")).expect("template.yaml is YAML");
        long_form(raw)
    })
}

/// Rewrites YAML-tagged intrinsics (`!Ref X`, `!GetAtt A.B`, `!Sub s`, …) into their long forms.
fn long_form(v: Value) -> Value {
    match v {
        Value::Tagged(t) => {
            let name = t.tag.to_string().trim_start_matches('!').to_string();
            let inner = long_form(t.value);
            let (key, value) = match name.as_str() {
                "Ref" | "Condition" => (name.clone(), inner),
                "GetAtt" => {
                    let value = match &inner {
                        Value::String(s) => {
                            let (res, attr) = s.split_once('.').expect("!GetAtt Resource.Attribute");
                            Value::Sequence(vec![res.into(), attr.into()])
                        }
                        _ => inner,
                    };
                    ("Fn::GetAtt".to_string(), value)
                }
                _ => (format!("Fn::{name}"), inner),
            };
            let mut m = Mapping::new();
            m.insert(Value::String(key), value);
            Value::Mapping(m)
        }
        Value::Mapping(m) => Value::Mapping(m.into_iter().map(|(k, v)| (long_form(k), long_form(v))).collect()),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(long_form).collect()),
        other => other,
    }
}

// --- navigation helpers ----------------------------------------------------------------------------------

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(*key))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

fn resources() -> Vec<(&'static str, &'static Value)> {
    template()["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().expect("logical id"), v))
        .collect()
}

fn resource(id: &str) -> &'static Value {
    template()["Resources"].get(id).unwrap_or_else(|| panic!("no resource {id}"))
}

fn of_type(ty: &str) -> Vec<(&'static str, &'static Value)> {
    resources().into_iter().filter(|(_, r)| text(r, &["Type"]) == Some(ty)).collect()
}

fn is_no_value(v: &Value) -> bool {
    text(v, &["Ref"]) == Some("AWS::NoValue")
}

/// Every value `v` can take: the elements of a list, both branches of an `Fn::If` (without
/// `AWS::NoValue`), or `v` itself.
fn alternatives(v: &Value) -> Vec<&Value> {
    if let Some(branches) = get(v, &["Fn::If"]).and_then(Value::as_sequence) {
        return branches[1..].iter().filter(|b| !is_no_value(b)).flat_map(alternatives).collect();
    }
    match v {
        Value::Sequence(items) => items.iter().filter(|b| !is_no_value(b)).flat_map(alternatives).collect(),
        other => vec![other],
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.map(alternatives)
        .unwrap_or_default()
        .into_iter()
        .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| describe(x)))
        .collect()
}

/// A short, stable description of a resource reference: `Ref X` → `X`, `GetAtt X.Arn` → `X`,
/// `Sub "${X.Arn}/index/i"` → `X/index/i`, `If [c, a, b]` → `a|b`.
fn describe(v: &Value) -> String {
    if let Some(r) = text(v, &["Ref"]) {
        return r.to_string();
    }
    if let Some(ga) = get(v, &["Fn::GetAtt"]).and_then(Value::as_sequence) {
        let attr = ga[1].as_str().unwrap_or("?");
        let id = ga[0].as_str().unwrap_or("?");
        return if attr == "Arn" { id.to_string() } else { format!("{id}.{attr}") };
    }
    if let Some(s) = text(v, &["Fn::Sub"]) {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed ${") + start;
            let var = &rest[start + 2..end];
            out.push_str(var.strip_suffix(".Arn").unwrap_or(var));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        return out;
    }
    if let Some(branches) = get(v, &["Fn::If"]).and_then(Value::as_sequence) {
        return branches[1..].iter().map(describe).collect::<Vec<_>>().join("|");
    }
    serde_yaml::to_string(v).unwrap_or_default().trim().to_string()
}

/// Every IAM-style statement anywhere in the template (role policies, trust policies, API resource
/// policies, queue policies, …): any mapping with `Effect` and `Action`/`NotAction`.
fn all_statements() -> Vec<(&'static str, &'static Value)> {
    fn walk<'a>(id: &'a str, v: &'a Value, out: &mut Vec<(&'a str, &'a Value)>) {
        match v {
            Value::Mapping(m) => {
                if m.contains_key("Effect") && (m.contains_key("Action") || m.contains_key("NotAction")) {
                    out.push((id, v));
                }
                for (_, child) in m {
                    walk(id, child, out);
                }
            }
            Value::Sequence(s) => s.iter().for_each(|c| walk(id, c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (id, r) in resources() {
        walk(id, r, &mut out);
    }
    out
}

fn is_allow(stmt: &Value) -> bool {
    text(stmt, &["Effect"]) == Some("Allow")
}

/// The role a function runs as (it must be a role of this template).
fn role_of(function: &Value) -> String {
    let role = get(function, &["Properties", "Role"]).expect("function has an explicit Role");
    let ga = get(role, &["Fn::GetAtt"]).and_then(Value::as_sequence).expect("Role: !GetAtt <role>.Arn");
    let id = ga[0].as_str().expect("role id");
    assert_eq!(text(resource(id), &["Type"]), Some("AWS::IAM::Role"), "{id}");
    id.to_string()
}

fn role_statements(role_id: &str) -> Vec<&'static Value> {
    let role = resource(role_id);
    get(role, &["Properties", "Policies"])
        .map(alternatives)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|p| get(p, &["PolicyDocument", "Statement"]).map(alternatives).unwrap_or_default())
        .collect()
}

/// (action, resource) pairs a role allows.
fn allowed_pairs(role_id: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for stmt in role_statements(role_id).into_iter().filter(|s| is_allow(s)) {
        let resources = get(stmt, &["Resource"]).map(alternatives).expect("statement has Resource");
        for action in strings(get(stmt, &["Action"])) {
            for res in &resources {
                out.insert((action.clone(), describe(res)));
            }
        }
    }
    out
}

fn functions() -> Vec<(&'static str, &'static Value)> {
    of_type("AWS::Serverless::Function")
}

fn binary_of(function: &Value) -> &str {
    text(function, &["Metadata", "BuildProperties", "Binary"]).expect("Metadata.BuildProperties.Binary")
}

fn function_by_binary(bin: &str) -> (&'static str, &'static Value) {
    functions().into_iter().find(|(_, f)| binary_of(f) == bin).unwrap_or_else(|| panic!("no function for {bin}"))
}

/// (api logical id, method, path, event) for every `Api` event of a function.
fn api_events(function: &Value) -> Vec<(String, String, String, &Value)> {
    let Some(events) = get(function, &["Properties", "Events"]).and_then(Value::as_mapping) else {
        return Vec::new();
    };
    events
        .values()
        .filter(|e| text(e, &["Type"]) == Some("Api"))
        .map(|e| {
            let api = get(e, &["Properties", "RestApiId"]).map(describe).expect("Api event names its RestApiId");
            let method = text(e, &["Properties", "Method"]).expect("Method").to_lowercase();
            let path = text(e, &["Properties", "Path"]).expect("Path").to_string();
            (api, method, path, e)
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// --- the request API -------------------------------------------------------------------------------------

const REQUEST_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/requests"),
    ("get", "/v1/requests/{id}"),
    ("post", "/v1/requests/{id}/cancel"),
    ("post", "/v1/requests/{id}/redeem"),
    ("get", "/v1/keys"),
    ("get", "/v1/whoami"),
];

#[test]
fn template_request_api_uses_iam_auth() {
    let api = resource("RequestApi");
    assert_eq!(text(api, &["Type"]), Some("AWS::Serverless::Api"));
    assert!(get(api, &["Properties", "DefinitionBody"]).is_none(), "an OpenAPI body could bypass Auth");
    assert_eq!(text(api, &["Properties", "Auth", "DefaultAuthorizer"]), Some("AWS_IAM"));
    // Without it API Gateway invokes the function with the caller's credentials.
    assert_eq!(text(api, &["Properties", "Auth", "InvokeRole"]), Some("NONE"));

    let mut routes = BTreeSet::new();
    for (fid, f) in functions() {
        for (api_id, method, path, event) in api_events(f) {
            if api_id != "RequestApi" {
                continue;
            }
            assert_eq!(binary_of(f), "request-api", "{fid} must not be routed on the request API");
            let auth = text(event, &["Properties", "Auth", "Authorizer"]);
            assert!(auth.is_none() || auth == Some("AWS_IAM"), "{fid} {method} {path}: authorizer {auth:?}");
            assert!(get(event, &["Properties", "Auth", "InvokeRole"]).is_none(), "{fid}: per-route InvokeRole");
            routes.insert((method, path));
        }
    }
    let expected: BTreeSet<(String, String)> =
        REQUEST_ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(routes, expected);
}

fn request_api_statements() -> Vec<&'static Value> {
    let custom = get(resource("RequestApi"), &["Properties", "Auth", "ResourcePolicy", "CustomStatements"])
        .expect("the request API has a resource policy");
    custom.as_sequence().expect("CustomStatements is a list").iter().collect()
}

#[test]
fn template_allows_only_the_listed_accounts() {
    let stmts = request_api_statements();
    let allows: Vec<_> = stmts.iter().flat_map(|s| alternatives(s)).filter(|s| is_allow(s)).collect();
    assert_eq!(allows.len(), 1, "one Allow statement");
    let allow = allows[0];
    assert_eq!(text(allow, &["Principal", "AWS", "Ref"]), Some("AllowedAccountIds"), "no Principal \"*\" allow");
    assert_eq!(strings(get(allow, &["Action"])), vec!["execute-api:Invoke"]);
    assert!(get(allow, &["Condition"]).is_none());

    // Same-account callers are allowed by their identity policy alone: only an explicit deny limits them.
    let deny = stmts
        .iter()
        .find(|s| get(s, &["Condition", "StringNotEquals", "aws:PrincipalAccount"]).is_some())
        .expect("an unconditional deny for unlisted accounts");
    assert_eq!(text(deny, &["Effect"]), Some("Deny"));
    assert_eq!(text(deny, &["Principal"]), Some("*"));
    assert_eq!(text(deny, &["Action"]), Some("execute-api:Invoke"));
    assert_eq!(text(deny, &["Resource"]), Some("execute-api:/*"));
    assert_eq!(text(deny, &["Condition", "StringNotEquals", "aws:PrincipalAccount", "Ref"]), Some("AllowedAccountIds"));

    let param = &template()["Parameters"]["AllowedAccountIds"];
    assert_eq!(text(param, &["Type"]), Some("CommaDelimitedList"));
    assert!(get(param, &["Default"]).is_none(), "the account list must be given at deploy time");
    assert_eq!(text(param, &["AllowedPattern"]), Some("^[0-9]{12}$"));
}

#[test]
fn template_denies_other_organizations_explicitly() {
    let conditional = request_api_statements()
        .into_iter()
        .find_map(|s| get(s, &["Fn::If"]).and_then(Value::as_sequence))
        .expect("the organization deny is conditional on an organization id being given");
    assert_eq!(conditional[0].as_str(), Some("HasOrgId"));
    let deny = &conditional[1];
    assert!(is_no_value(&conditional[2]), "no statement at all when no organization is given");
    assert_eq!(text(deny, &["Effect"]), Some("Deny"), "explicit deny: IAM and resource policies are OR-ed");
    assert_eq!(text(deny, &["Principal"]), Some("*"));
    assert_eq!(text(deny, &["Action"]), Some("execute-api:Invoke"));
    assert_eq!(text(deny, &["Resource"]), Some("execute-api:/*"));
    assert_eq!(text(deny, &["Condition", "StringNotEquals", "aws:PrincipalOrgID", "Ref"]), Some("AllowedOrgId"));

    // HasOrgId is exactly "AllowedOrgId is not empty".
    let cond = &template()["Conditions"]["HasOrgId"];
    let eq = get(cond, &["Fn::Not"]).and_then(Value::as_sequence).expect("Fn::Not")[0]
        .get("Fn::Equals")
        .and_then(Value::as_sequence)
        .expect("Fn::Equals");
    assert_eq!(text(&eq[0], &["Ref"]), Some("AllowedOrgId"));
    assert_eq!(eq[1].as_str(), Some(""));
}

// --- the Slack endpoint and both stages ------------------------------------------------------------------

#[test]
fn template_slack_endpoint_is_a_separate_api_without_iam() {
    let api = resource("SlackApi");
    assert_eq!(text(api, &["Type"]), Some("AWS::Serverless::Api"));
    assert!(get(api, &["Properties", "DefinitionBody"]).is_none());
    assert!(get(api, &["Properties", "Auth"]).is_none(), "Slack cannot sign with SigV4");
    let (_, f) = function_by_binary("slack-interactions");
    let events: Vec<_> = api_events(f).into_iter().map(|(a, m, p, _)| (a, m, p)).collect();
    assert_eq!(events, vec![("SlackApi".to_string(), "post".to_string(), "/slack/interactions".to_string())]);
    for (fid, other) in functions() {
        for (api_id, ..) in api_events(other) {
            assert!(api_id != "SlackApi" || binary_of(other) == "slack-interactions", "{fid} on the Slack API");
        }
    }
}

#[test]
fn template_apis_are_throttled_with_json_access_logs() {
    for id in ["RequestApi", "SlackApi"] {
        let props = &resource(id)["Properties"];
        let settings = props["MethodSettings"].as_sequence().expect("MethodSettings");
        let all = settings
            .iter()
            .find(|s| text(s, &["ResourcePath"]) == Some("/*") && text(s, &["HttpMethod"]) == Some("*"))
            .unwrap_or_else(|| panic!("{id}: throttling for every method"));
        let rate = all["ThrottlingRateLimit"].as_f64().expect("rate");
        let burst = all["ThrottlingBurstLimit"].as_u64().expect("burst");
        assert!(rate > 0.0 && rate <= 1000.0 && burst > 0 && burst <= 2000, "{id}: {rate}/{burst}");
        assert_ne!(all.get("DataTraceEnabled").and_then(Value::as_bool), Some(true), "{id}: bodies in logs");

        let format = text(props, &["AccessLogSetting", "Format"]).unwrap_or_else(|| panic!("{id}: access log"));
        let parsed: serde_json::Value =
            serde_json::from_str(format).unwrap_or_else(|e| panic!("{id}: access log format is not JSON: {e}"));
        let fields = parsed.as_object().expect("a JSON object");
        for key in ["requestId", "status", "sourceIp", "errorMessage"] {
            assert!(fields.contains_key(key), "{id}: access log lacks {key}");
        }
        let dest = describe(get(props, &["AccessLogSetting", "DestinationArn"]).expect("DestinationArn"));
        let group = dest.rsplit(':').next().unwrap();
        assert_eq!(text(resource(group), &["Type"]), Some("AWS::Logs::LogGroup"), "{id}: {dest}");
    }
}

// --- tables ----------------------------------------------------------------------------------------------

#[test]
fn template_tables_have_pitr_and_deletion_protection() {
    let tables = of_type("AWS::DynamoDB::Table");
    let ids: BTreeSet<&str> = tables.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, BTreeSet::from(["AuditTable", "PoliciesTable", "RequestsTable"]));
    for (id, t) in tables {
        let p = &t["Properties"];
        assert_eq!(
            get(p, &["PointInTimeRecoverySpecification", "PointInTimeRecoveryEnabled"]),
            Some(&true.into()),
            "{id}"
        );
        assert_eq!(get(p, &["DeletionProtectionEnabled"]), Some(&true.into()), "{id}");
        assert_eq!(get(p, &["SSESpecification", "SSEEnabled"]), Some(&true.into()), "{id}");
        assert_eq!(text(p, &["BillingMode"]), Some("PAY_PER_REQUEST"), "{id}");
        assert_eq!(text(t, &["DeletionPolicy"]), Some("Retain"), "{id}");
        assert_eq!(text(t, &["UpdateReplacePolicy"]), Some("Retain"), "{id}");
    }
}

/// (hash, range) of a key schema.
fn keys(schema: &Value) -> (String, Option<String>) {
    let mut hash = None;
    let mut range = None;
    for k in schema.as_sequence().expect("KeySchema") {
        let name = text(k, &["AttributeName"]).unwrap().to_string();
        match text(k, &["KeyType"]) {
            Some("HASH") => hash = Some(name),
            Some("RANGE") => range = Some(name),
            other => panic!("key type {other:?}"),
        }
    }
    (hash.expect("a HASH key"), range)
}

#[test]
fn template_table_keys_match_the_dynamodb_store() {
    // The exact names of src/adapters/dynamodb/keys.rs; changing one is a data migration.
    let expect = |id: &str,
                  hash: &str,
                  range: Option<&str>,
                  attrs: &[(&str, &str)],
                  gsis: &[(&str, &str, &str)],
                  ttl: Option<&str>| {
        let p = &resource(id)["Properties"];
        assert_eq!(keys(&p["KeySchema"]), (hash.to_string(), range.map(str::to_string)), "{id}");
        let got: BTreeMap<String, String> = p["AttributeDefinitions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| (text(a, &["AttributeName"]).unwrap().into(), text(a, &["AttributeType"]).unwrap().into()))
            .collect();
        let want: BTreeMap<String, String> = attrs.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(got, want, "{id} attributes");
        let got_gsis: BTreeSet<(String, String, Option<String>)> = p
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_sequence)
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|g| {
                assert_eq!(text(g, &["Projection", "ProjectionType"]), Some("ALL"), "{id}");
                let (h, r) = keys(&g["KeySchema"]);
                (text(g, &["IndexName"]).unwrap().to_string(), h, r)
            })
            .collect();
        let want_gsis: BTreeSet<(String, String, Option<String>)> =
            gsis.iter().map(|(n, h, r)| (n.to_string(), h.to_string(), Some(r.to_string()))).collect();
        assert_eq!(got_gsis, want_gsis, "{id} indexes");
        let got_ttl = text(p, &["TimeToLiveSpecification", "AttributeName"]);
        assert_eq!(got_ttl, ttl, "{id} TTL");
        if ttl.is_some() {
            assert_eq!(get(p, &["TimeToLiveSpecification", "Enabled"]), Some(&true.into()), "{id}");
        }
    };
    expect("PoliciesTable", "pk", Some("sk"), &[("pk", "S"), ("sk", "S")], &[], None);
    expect(
        "RequestsTable",
        "pk",
        Some("sk"),
        &[
            ("pk", "S"),
            ("sk", "S"),
            ("gsi1pk", "S"),
            ("gsi1sk", "S"),
            ("gsi2pk", "S"),
            ("gsi2sk", "S"),
            ("gsi3pk", "S"),
            ("gsi3sk", "S"),
        ],
        &[("by-principal", "gsi1pk", "gsi1sk"), ("pending", "gsi2pk", "gsi2sk"), ("notify-due", "gsi3pk", "gsi3sk")],
        Some("ttl"),
    );
    // No TTL on the audit chain: an expired record would be a gap `audit verify` reports.
    expect(
        "AuditTable",
        "pk",
        Some("seq"),
        &[("pk", "S"), ("seq", "N"), ("request_id", "S")],
        &[("by-request", "request_id", "seq")],
        None,
    );
}

// --- IAM -------------------------------------------------------------------------------------------------

/// `"*"` resources AWS requires, as (logical id, action). None today: keep it that way if you can.
const STAR_RESOURCE_EXCEPTIONS: &[(&str, &str)] = &[];

#[test]
fn template_has_no_wildcard_actions() {
    let stmts = all_statements();
    assert!(stmts.len() >= 20, "found only {} statements: is the walker broken?", stmts.len());
    for (id, stmt) in stmts {
        assert!(get(stmt, &["NotAction"]).is_none(), "{id}: NotAction");
        if is_allow(stmt) {
            assert!(get(stmt, &["NotResource"]).is_none(), "{id}: Allow with NotResource");
        }
        let actions = strings(get(stmt, &["Action"]));
        assert!(!actions.is_empty(), "{id}: statement without actions");
        for action in &actions {
            assert!(!action.contains('*'), "{id}: wildcard action {action:?}");
            assert!(action.contains(':'), "{id}: action {action:?} has no service prefix");
        }
        for res in strings(get(stmt, &["Resource"])) {
            // In a key policy "*" is the key itself: KMS allows no other resource there.
            if res == "*" && text(resource(id), &["Type"]) != Some("AWS::KMS::Key") {
                for action in &actions {
                    assert!(
                        STAR_RESOURCE_EXCEPTIONS.contains(&(id, action.as_str())),
                        "{id}: {action} on resource \"*\""
                    );
                }
            }
        }
    }
    // SAM-generated roles would attach AWSLambdaBasicExecutionRole (logs on "*") and SAM policy templates
    // grant broad sets: every function runs as a role written out in this template instead.
    for (fid, f) in functions() {
        assert!(get(f, &["Properties", "Policies"]).is_none(), "{fid}: SAM Policies");
        let role = role_of(f);
        assert!(get(resource(&role), &["Properties", "ManagedPolicyArns"]).is_none(), "{role}: managed policies");
    }
}

const AUDIT_APPEND_AND_READ: &[&str] = &["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query"];
const AUDIT_REWRITES: &[&str] = &[
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
];

#[test]
fn template_audit_table_is_append_only() {
    // Nothing in the template allows anything but put, get and query on the audit table or its index.
    for (id, stmt) in all_statements().into_iter().filter(|(_, s)| is_allow(s)) {
        let touches_audit = strings(get(stmt, &["Resource"])).iter().any(|r| r.starts_with("AuditTable"));
        if !touches_audit {
            continue;
        }
        for action in strings(get(stmt, &["Action"])) {
            assert!(AUDIT_APPEND_AND_READ.contains(&action.as_str()), "{id}: {action} on the audit table");
        }
    }
    // And every function role denies the rewrites explicitly, so no policy attached later can grant them.
    for (fid, f) in functions() {
        let role = role_of(f);
        let denied: BTreeSet<(String, String)> = role_statements(&role)
            .into_iter()
            .filter(|s| text(s, &["Effect"]) == Some("Deny"))
            .flat_map(|s| {
                let resources = strings(get(s, &["Resource"]));
                strings(get(s, &["Action"]))
                    .into_iter()
                    .flat_map(move |a| resources.clone().into_iter().map(move |r| (a.clone(), r)))
            })
            .collect();
        for action in AUDIT_REWRITES {
            for res in ["AuditTable", "AuditTable/index/by-request"] {
                assert!(denied.contains(&(action.to_string(), res.to_string())), "{fid}: no deny of {action} on {res}");
            }
        }
    }
    assert!(get(resource("AuditTable"), &["Properties", "TimeToLiveSpecification"]).is_none());
}

#[test]
fn template_function_roles_grant_exactly_the_documented_actions() {
    // The least-privilege table of docs/deploy.md. DynamoDB checks each action inside TransactWriteItems
    // as its own action (Put → PutItem, Update → UpdateItem, ConditionCheck → ConditionCheckItem):
    // there is no dynamodb:TransactWriteItems permission to grant.
    let shared = |log_group: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("logs:CreateLogStream", log_group),
            ("logs:PutLogEvents", log_group),
            ("dynamodb:GetItem", "RequestsTable"),
            ("dynamodb:PutItem", "RequestsTable"),
            ("dynamodb:UpdateItem", "RequestsTable"),
            ("dynamodb:ConditionCheckItem", "RequestsTable"),
            ("dynamodb:Query", "RequestsTable"),
            ("dynamodb:Query", "RequestsTable/index/by-principal"),
            ("dynamodb:Query", "RequestsTable/index/pending"),
            ("dynamodb:Query", "RequestsTable/index/notify-due"),
            ("dynamodb:PutItem", "AuditTable"),
            ("dynamodb:GetItem", "AuditTable"),
            ("dynamodb:Query", "AuditTable"),
            ("dynamodb:Query", "AuditTable/index/by-request"),
            // The bot token: the secret created here, or the one given as a parameter.
            ("secretsmanager:GetSecretValue", "SlackBotTokenSecret"),
            ("secretsmanager:GetSecretValue", "SlackBotTokenSecretArn"),
        ]
        .iter()
        .map(|(a, r)| (a.to_string(), r.to_string()))
        .collect();
        v.sort();
        v
    };
    let with = |mut base: Vec<(String, String)>, extra: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        base.extend(extra.iter().map(|(a, r)| (a.to_string(), r.to_string())));
        base.into_iter().collect()
    };
    let expected: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::from([
        (
            "request-api",
            with(
                shared("RequestApiFunctionLogGroup"),
                &[("dynamodb:GetItem", "PoliciesTable"), ("dynamodb:Query", "PoliciesTable")],
            ),
        ),
        (
            "slack-interactions",
            with(
                shared("SlackInteractionsFunctionLogGroup"),
                &[
                    ("dynamodb:GetItem", "PoliciesTable"),
                    ("dynamodb:Query", "PoliciesTable"),
                    // The request and the policy generation in one read (issue 18).
                    ("dynamodb:BatchGetItem", "PoliciesTable"),
                    ("dynamodb:BatchGetItem", "RequestsTable"),
                    // Only this function may read the signing secret (row 28).
                    ("secretsmanager:GetSecretValue", "SlackSigningSecret"),
                    ("secretsmanager:GetSecretValue", "SlackSigningSecretArn"),
                ],
            ),
        ),
        (
            "sweeper",
            with(
                shared("SweeperFunctionLogGroup"),
                &[
                    ("dynamodb:GetItem", "PoliciesTable"),
                    ("sqs:SendMessage", "SweeperFailureQueue"),
                    // Row 37: write a checkpoint and read the newest back (its first version); only this
                    // role writes them.
                    ("s3:PutObject", "CheckpointBucket/checkpoints/*"),
                    ("s3:GetObject", "CheckpointBucket/checkpoints/*"),
                    ("s3:GetObjectVersion", "CheckpointBucket/checkpoints/*"),
                    ("s3:ListBucket", "CheckpointBucket"),
                    ("s3:ListBucketVersions", "CheckpointBucket"),
                    // Issue 19: publish decision events, and delete the outbox items once published
                    // (only those: `events_only_the_sweeper_publishes_…`).
                    ("events:PutEvents", "EventBus"),
                    ("dynamodb:DeleteItem", "RequestsTable"),
                ],
            ),
        ),
    ]);
    let mut seen = BTreeSet::new();
    for (fid, f) in functions() {
        let bin = binary_of(f);
        let want = expected.get(bin).unwrap_or_else(|| panic!("{fid}: unexpected binary {bin}"));
        let got = allowed_pairs(&role_of(f));
        let extra: Vec<_> = got.difference(want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(extra.is_empty() && missing.is_empty(), "{fid}: extra {extra:?}, missing {missing:?}");
        seen.insert(bin);
    }
    assert_eq!(seen.len(), expected.len());

    // The secrets the functions read are the ones they may read.
    for (fid, f) in functions() {
        let env = get(f, &["Properties", "Environment", "Variables", "COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID"]);
        assert_eq!(env.map(describe).as_deref(), Some("SlackBotTokenSecret|SlackBotTokenSecretArn"), "{fid}");
    }
    // Only Lambda may assume the function roles.
    for (fid, f) in functions() {
        let trust = &resource(&role_of(f))["Properties"]["AssumeRolePolicyDocument"]["Statement"];
        let stmts = alternatives(trust);
        assert_eq!(stmts.len(), 1, "{fid}");
        assert_eq!(text(stmts[0], &["Principal", "Service"]), Some("lambda.amazonaws.com"), "{fid}");
        assert_eq!(text(stmts[0], &["Action"]), Some("sts:AssumeRole"), "{fid}");
    }
}

// --- functions -------------------------------------------------------------------------------------------

#[test]
fn template_functions_are_arm64_al2023() {
    let mut bins = BTreeSet::new();
    for (fid, f) in functions() {
        let p = &f["Properties"];
        assert_eq!(text(p, &["Runtime"]), Some("provided.al2023"), "{fid}");
        assert_eq!(text(p, &["Handler"]), Some("bootstrap"), "{fid}");
        assert_eq!(strings(get(p, &["Architectures"])), vec!["arm64"], "{fid}");
        assert_eq!(text(f, &["Metadata", "BuildMethod"]), Some("rust-cargolambda"), "{fid}");
        assert_eq!(text(p, &["LoggingConfig", "LogFormat"]), Some("JSON"), "{fid}");
        let group = get(p, &["LoggingConfig", "LogGroup"]).map(describe).expect("own log group");
        assert_eq!(text(resource(&group), &["Type"]), Some("AWS::Logs::LogGroup"), "{fid}");
        bins.insert(binary_of(f).to_string());
    }
    assert_eq!(bins, set(&["request-api", "slack-interactions", "sweeper"]));
    assert!(
        get(template(), &["Globals", "Function", "Architectures"]).is_none()
            && get(template(), &["Globals", "Function", "Runtime"]).is_none(),
        "keep runtime and architecture on each function, where this test reads them"
    );
}

/// The bin targets of the workspace package whose manifest is `<dir>/Cargo.toml`, from `cargo metadata`.
fn cargo_bins_of(dir: &str) -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let manifest = root.join(dir).join("Cargo.toml").canonicalize().expect("the CodeUri has a Cargo.toml");
    let package = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["manifest_path"].as_str().map(std::path::PathBuf::from).as_deref() == Some(manifest.as_path()))
        .unwrap_or_else(|| panic!("no workspace package at {dir}"));
    package["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

/// Each function builds a bin of the package its `CodeUri` names, and that package is `crates/lambda`: built
/// alone, so nothing of the CLI, local mode or the tests is linked (`layering` checks that package's tree).
#[test]
fn template_binaries_are_cargo_bins() {
    for (fid, f) in functions() {
        let code_uri = text(f, &["Properties", "CodeUri"]).unwrap_or_else(|| panic!("{fid}: no CodeUri"));
        assert_eq!(code_uri, "crates/lambda", "{fid}: CodeUri");
        let bins = cargo_bins_of(code_uri);
        assert!(bins.contains(binary_of(f)), "{fid}: Binary {} is not a bin of {code_uri}: {bins:?}", binary_of(f));
    }
}

#[test]
fn template_functions_get_every_required_setting() {
    const ALL: &[&str] = &[
        "COUNTERSIGN_POLICIES_TABLE",
        "COUNTERSIGN_REQUESTS_TABLE",
        "COUNTERSIGN_AUDIT_TABLE",
        "COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID",
        "COUNTERSIGN_SLACK_TEAM_ID",
        "COUNTERSIGN_SLACK_APP_ID",
        "COUNTERSIGN_ALLOWED_ACCOUNTS",
        "COUNTERSIGN_ALLOWED_ORG_ID",
        "COUNTERSIGN_SENSITIVE_ENVIRONMENTS",
        "COUNTERSIGN_LOG_LEVEL",
    ];
    for (fid, f) in functions() {
        let vars = get(f, &["Properties", "Environment", "Variables"]).expect("environment");
        for var in ALL {
            assert!(vars.get(*var).is_some(), "{fid}: {var} not set");
        }
        let tables = [
            ("COUNTERSIGN_POLICIES_TABLE", "PoliciesTable"),
            ("COUNTERSIGN_REQUESTS_TABLE", "RequestsTable"),
            ("COUNTERSIGN_AUDIT_TABLE", "AuditTable"),
        ];
        for (var, table) in tables {
            assert_eq!(text(&vars[var], &["Ref"]), Some(table), "{fid}: {var}");
        }
        let http = !api_events(f).is_empty();
        let ignore_stage = vars.get("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").and_then(Value::as_str);
        assert_eq!(ignore_stage, if http { Some("true") } else { None }, "{fid}: stage in path");
    }
}

#[test]
fn template_function_timeouts_fit_their_callers() {
    // The request API long-polls up to 20 s (`wait=20`) behind API Gateway's 29 s integration timeout.
    let timeout = |bin: &str| function_by_binary(bin).1["Properties"]["Timeout"].as_u64().expect("Timeout");
    let api = timeout("request-api");
    assert!(api > 20 && api < 29, "request-api timeout {api}s");
    // Slack callbacks are answered within 3 s by design; the function's timeout only bounds a stuck one.
    let slack = timeout("slack-interactions");
    assert!(slack < 29, "slack-interactions timeout {slack}s");
}

#[test]
fn template_sweeper_runs_every_minute_with_a_failure_destination() {
    let (fid, f) = function_by_binary("sweeper");
    let p = &f["Properties"];
    let events: Vec<&Value> = p["Events"].as_mapping().expect("Events").values().collect();
    assert_eq!(events.len(), 1, "{fid}");
    assert_eq!(text(events[0], &["Type"]), Some("Schedule"));
    assert_eq!(text(events[0], &["Properties", "Schedule"]), Some("rate(1 minute)"));
    let timeout = p["Timeout"].as_u64().expect("Timeout");
    assert!(timeout < 60, "a run must end before the next one starts: {timeout}s");

    let on_failure =
        get(p, &["EventInvokeConfig", "DestinationConfig", "OnFailure"]).expect("an on-failure destination");
    assert_eq!(text(on_failure, &["Type"]), Some("SQS"));
    let queue = describe(&on_failure["Destination"]);
    assert_eq!(text(resource(&queue), &["Type"]), Some("AWS::SQS::Queue"));
    assert!(allowed_pairs(&role_of(f)).contains(&("sqs:SendMessage".to_string(), queue.clone())));
    let alarmed = of_type("AWS::CloudWatch::Alarm").into_iter().any(|(_, a)| {
        strings(get(a, &["Properties", "Dimensions"]).and_then(|d| d.as_sequence()).map(|d| &d[0]["Value"]))
            .contains(&format!("{queue}.QueueName"))
    });
    assert!(alarmed, "failed sweeper runs raise an alarm");
}

#[test]
fn template_alarms_on_errors_and_throttles_of_every_function() {
    let alarms = of_type("AWS::CloudWatch::Alarm");
    for (fid, _) in functions() {
        for metric in ["Errors", "Throttles"] {
            let found = alarms.iter().any(|(_, a)| {
                let p = &a["Properties"];
                text(p, &["Namespace"]) == Some("AWS/Lambda")
                    && text(p, &["MetricName"]) == Some(metric)
                    && p["Dimensions"].as_sequence().is_some_and(|d| {
                        d.iter().any(|x| text(x, &["Name"]) == Some("FunctionName") && describe(&x["Value"]) == fid)
                    })
            });
            assert!(found, "{fid}: no {metric} alarm");
        }
    }
}

#[test]
fn template_outputs_the_urls_and_table_names() {
    let outputs = template()["Outputs"].as_mapping().expect("Outputs");
    for key in ["RequestApiUrl", "SlackInteractivityUrl", "PoliciesTableName", "RequestsTableName", "AuditTableName"] {
        assert!(outputs.contains_key(key), "output {key}");
    }
    let slack_url = describe(&template()["Outputs"]["SlackInteractivityUrl"]["Value"]);
    assert!(
        slack_url.starts_with("https://SlackApi.") && slack_url.ends_with("/api/slack/interactions"),
        "{slack_url}"
    );
    let api_url = describe(&template()["Outputs"]["RequestApiUrl"]["Value"]);
    assert!(api_url.starts_with("https://RequestApi.") && api_url.ends_with("/api"), "{api_url}");
    assert_eq!(text(resource("RequestApi"), &["Properties", "StageName"]), Some("api"));
    assert_eq!(text(resource("SlackApi"), &["Properties", "StageName"]), Some("api"));
}

// --- files around the template ---------------------------------------------------------------------------

#[test]
fn caller_policy_grants_only_the_request_api_routes() {
    let policy: serde_json::Value = serde_json::from_str(&read("infra/caller-policy.json")).expect("JSON");
    let stmts = policy["Statement"].as_array().expect("Statement list");
    assert_eq!(stmts.len(), 1);
    let s = &stmts[0];
    assert_eq!(s["Effect"], "Allow");
    assert_eq!(s["Action"], "execute-api:Invoke");
    let resources: BTreeSet<String> =
        s["Resource"].as_array().expect("Resource list").iter().map(|r| r.as_str().unwrap().to_string()).collect();
    // Route → execute-api resource: the stage, the method in upper case, path parameters as `*`.
    let prefix = "arn:aws:execute-api:REGION:ACCOUNT_ID:API_ID/api/";
    let expected: BTreeSet<String> =
        REQUEST_ROUTES.iter().map(|(m, p)| format!("{prefix}{}{}", m.to_uppercase(), p.replace("{id}", "*"))).collect();
    assert_eq!(resources, expected);
}

#[test]
fn slack_manifest_asks_only_for_the_needed_scopes() {
    let manifest: Value = serde_yaml::from_str(&read("infra/slack-app-manifest.yaml")).expect("YAML");
    let bot: BTreeSet<String> = manifest["oauth_config"]["scopes"]["bot"]
        .as_sequence()
        .expect("bot scopes")
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    // The history scopes let the relay adopt a post it never recorded instead of posting twice (row 23);
    // users:read is users.info at vote time (row 34).
    assert_eq!(bot, set(&["chat:write", "channels:history", "groups:history", "usergroups:read", "users:read"]));
    assert!(get(&manifest, &["oauth_config", "scopes", "user"]).is_none(), "no user-token scopes");
    assert!(get(&manifest, &["settings", "event_subscriptions"]).is_none(), "no events are consumed");
    assert!(get(&manifest, &["features", "slash_commands"]).is_none());
    assert_eq!(get(&manifest, &["settings", "interactivity", "is_enabled"]), Some(&true.into()));
    assert_eq!(get(&manifest, &["settings", "socket_mode_enabled"]), Some(&false.into()));
    let url = text(&manifest, &["settings", "interactivity", "request_url"]).expect("request_url");
    assert!(url.starts_with("https://") && url.ends_with("/api/slack/interactions"), "{url}");
}

// --- row 28: only slack-interactions holds the key that forges approvals ---------------------------------

const SIGNING_SECRET: [&str; 2] = ["SlackSigningSecret", "SlackSigningSecretArn"];
const BOT_TOKEN_SECRET: [&str; 2] = ["SlackBotTokenSecret", "SlackBotTokenSecretArn"];

/// Every resource (described) on which a function's role allows any Secrets Manager action.
fn secrets_readable_by(function: &Value) -> BTreeSet<String> {
    allowed_pairs(&role_of(function))
        .into_iter()
        .filter(|(action, _)| action.starts_with("secretsmanager:"))
        .map(|(_, res)| res)
        .collect()
}

#[test]
fn t28_request_api_and_sweeper_roles_cannot_read_the_signing_secret() {
    for (fid, f) in functions() {
        let readable = secrets_readable_by(f);
        let vars = get(f, &["Properties", "Environment", "Variables"]).expect("environment");
        assert!(vars.get("COUNTERSIGN_SLACK_SECRET_ID").is_none(), "{fid}: the combined secret is gone");
        assert_eq!(
            vars.get("COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID").map(describe).as_deref(),
            Some("SlackBotTokenSecret|SlackBotTokenSecretArn"),
            "{fid}"
        );
        let signing_env = vars.get("COUNTERSIGN_SLACK_SIGNING_SECRET_ID").map(describe);
        if binary_of(f) == "slack-interactions" {
            assert_eq!(
                readable,
                set(&[SIGNING_SECRET[0], SIGNING_SECRET[1], BOT_TOKEN_SECRET[0], BOT_TOKEN_SECRET[1]])
            );
            assert_eq!(signing_env.as_deref(), Some("SlackSigningSecret|SlackSigningSecretArn"), "{fid}");
        } else {
            // Only the bot token: neither the secret created here nor one given as a parameter.
            assert_eq!(readable, set(&BOT_TOKEN_SECRET), "{fid} ({}) may read more than the bot token", binary_of(f));
            assert_eq!(signing_env, None, "{fid} ({}) is told where the signing secret is", binary_of(f));
        }
    }
    // No other statement of the template grants the signing secret (a secret resource policy, say).
    for (id, stmt) in all_statements().into_iter().filter(|(_, s)| is_allow(s)) {
        let resources = strings(get(stmt, &["Resource"]));
        if resources.iter().any(|r| SIGNING_SECRET.contains(&r.as_str())) {
            assert!(id == role_of(function_by_binary("slack-interactions").1), "{id} grants the signing secret");
        }
    }
    assert!(of_type("AWS::SecretsManager::ResourcePolicy").is_empty());
}

#[test]
fn t28_template_creates_both_secrets_and_no_combined_one() {
    let secrets: BTreeSet<&str> = of_type("AWS::SecretsManager::Secret").into_iter().map(|(id, _)| id).collect();
    assert_eq!(secrets, BTreeSet::from(["SlackBotTokenSecret", "SlackSigningSecret"]));
    let params = template()["Parameters"].as_mapping().expect("Parameters");
    assert!(!params.contains_key("SlackSecretArn"), "the combined secret's parameter is gone");
    for (id, param, condition) in [
        ("SlackSigningSecret", "SlackSigningSecretArn", "CreateSlackSigningSecret"),
        ("SlackBotTokenSecret", "SlackBotTokenSecretArn", "CreateSlackBotTokenSecret"),
    ] {
        let r = resource(id);
        assert_eq!(text(r, &["Condition"]), Some(condition), "{id}: created only when no ARN is given");
        let eq = get(&template()["Conditions"][condition], &["Fn::Equals"]).and_then(Value::as_sequence).unwrap();
        assert_eq!((text(&eq[0], &["Ref"]), eq[1].as_str()), (Some(param), Some("")), "{condition}");
        assert_eq!(text(r, &["DeletionPolicy"]), Some("Retain"), "{id}");
        assert_eq!(text(r, &["UpdateReplacePolicy"]), Some("Retain"), "{id}");
        assert_eq!(text(&template()["Parameters"][param], &["Default"]), Some(""), "{param}");
    }
    // Each holds only its own value: the signing secret no bot token, the bot token no signing secret.
    let signing = &resource("SlackSigningSecret")["Properties"]["GenerateSecretString"];
    assert_eq!(text(signing, &["GenerateStringKey"]), Some("signing_secret"));
    let template_json: serde_json::Value =
        serde_json::from_str(text(signing, &["SecretStringTemplate"]).expect("SecretStringTemplate")).unwrap();
    assert_eq!(template_json, serde_json::json!({}));
    let bot: serde_json::Value =
        serde_json::from_str(text(resource("SlackBotTokenSecret"), &["Properties", "SecretString"]).unwrap()).unwrap();
    assert_eq!(bot.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["bot_token"]);
    let outputs = template()["Outputs"].as_mapping().expect("Outputs");
    for key in ["SlackSigningSecretArnOut", "SlackBotTokenSecretArnOut"] {
        assert!(outputs.contains_key(key), "output {key} (the rotation runbook reads it)");
    }
    // Rotation is manual today (Slack issues both values; docs/deploy.md). A rotation schedule added later
    // must cover both secrets, not one.
    let rotated: BTreeSet<String> = of_type("AWS::SecretsManager::RotationSchedule")
        .into_iter()
        .map(|(_, r)| describe(&r["Properties"]["SecretId"]))
        .collect();
    assert!(rotated.is_empty() || rotated.len() == 2, "rotation covers one secret only: {rotated:?}");
    // The grace period after a rotation (row 27) is set from a parameter on the interactions function.
    let (_, f) = function_by_binary("slack-interactions");
    let grace = get(f, &["Properties", "Environment", "Variables", "COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS"]);
    let param = grace.and_then(|g| text(g, &["Ref"])).expect("grace from a parameter");
    let p = &template()["Parameters"][param];
    assert_eq!(
        (p["Default"].as_u64(), p["MinValue"].as_u64(), p["MaxValue"].as_u64()),
        (Some(600), Some(0), Some(3600))
    );
}

// --- row 38: exhaustion ----------------------------------------------------------------------------------

/// A `Type: Number` parameter's (Default, MinValue).
fn number_parameter(name: &str) -> (u64, u64) {
    let p = template()["Parameters"].get(name).unwrap_or_else(|| panic!("no parameter {name}"));
    assert_eq!(text(p, &["Type"]), Some("Number"), "{name}");
    let default = p["Default"].as_u64().unwrap_or_else(|| panic!("{name}: a numeric Default"));
    let min = p["MinValue"].as_u64().unwrap_or_else(|| panic!("{name}: a MinValue"));
    (default, min)
}

#[test]
fn t38_every_function_has_its_own_reserved_concurrency_from_a_parameter() {
    let expected_defaults = BTreeMap::from([("request-api", 50), ("slack-interactions", 20), ("sweeper", 2)]);
    let mut params = BTreeSet::new();
    for (fid, f) in functions() {
        let bin = binary_of(f);
        let reserved = get(f, &["Properties", "ReservedConcurrentExecutions"])
            .unwrap_or_else(|| panic!("{fid}: no ReservedConcurrentExecutions"));
        let param = text(reserved, &["Ref"]).unwrap_or_else(|| panic!("{fid}: reserved concurrency from a parameter"));
        let (default, min) = number_parameter(param);
        assert_eq!(Some(&default), expected_defaults.get(bin), "{fid}: default of {param}");
        // 0 would switch the function off; reserved concurrency is also its ceiling.
        assert!(min >= 1, "{param}: MinValue {min}");
        assert!(params.insert(param.to_string()), "{fid}: {param} is shared with another function");
    }
    assert_eq!(params.len(), expected_defaults.len());
    assert!(get(template(), &["Globals", "Function", "ReservedConcurrentExecutions"]).is_none());
    // The request API's long polls are bounded: the longest `wait` ends before the function's timeout, and
    // at most its reserved concurrency run at once, in a pool slack-interactions does not share.
    let timeout = function_by_binary("request-api").1["Properties"]["Timeout"].as_u64().expect("Timeout");
    assert!(countersign_core::service::requests::MAX_WAIT_SECONDS < timeout);
    let (api, _) = number_parameter("RequestApiReservedConcurrency");
    let (slack, _) = number_parameter("SlackInteractionsReservedConcurrency");
    assert!(slack >= 10 && api >= slack, "defaults {api} / {slack}");
}

#[test]
fn t38_slack_api_has_a_waf_rate_rule_per_source_ip() {
    let acls = of_type("AWS::WAFv2::WebACL");
    assert_eq!(acls.len(), 1, "one web ACL");
    let (id, acl) = acls[0];
    let p = &acl["Properties"];
    assert_eq!(text(p, &["Scope"]), Some("REGIONAL"), "{id}: API Gateway stages take REGIONAL ACLs");
    assert!(get(p, &["DefaultAction", "Allow"]).is_some(), "{id}: default action Allow");
    assert!(get(p, &["DefaultAction", "Block"]).is_none(), "{id}");
    let visible = |v: &Value, what: &str| {
        assert_eq!(get(v, &["SampledRequestsEnabled"]), Some(&true.into()), "{what}");
        assert_eq!(get(v, &["CloudWatchMetricsEnabled"]), Some(&true.into()), "{what}");
        assert!(get(v, &["MetricName"]).is_some(), "{what}: MetricName");
    };
    visible(&p["VisibilityConfig"], id);
    let rules = p["Rules"].as_sequence().expect("Rules");
    let rate: Vec<&Value> = rules.iter().filter(|r| get(r, &["Statement", "RateBasedStatement"]).is_some()).collect();
    assert_eq!(rate.len(), 1, "{id}: one rate-based rule");
    let rule = rate[0];
    assert!(get(rule, &["Action", "Block"]).is_some(), "the rate rule blocks");
    let stmt = &rule["Statement"]["RateBasedStatement"];
    assert_eq!(text(stmt, &["AggregateKeyType"]), Some("IP"), "per source IP");
    assert!(get(stmt, &["ScopeDownStatement"]).is_none(), "the rule counts every request");
    assert_eq!(stmt["EvaluationWindowSec"].as_u64(), Some(300), "per 5 minutes");
    let limit = text(stmt, &["Limit", "Ref"]).expect("Limit from a parameter");
    assert_eq!(number_parameter(limit), (600, 10), "{limit}: default 600 per 5 minutes");
    visible(&rule["VisibilityConfig"], "rate rule");
}

#[test]
fn t38_web_acl_is_associated_with_the_slack_api_stage() {
    let assocs = of_type("AWS::WAFv2::WebACLAssociation");
    assert_eq!(assocs.len(), 1);
    let (id, a) = assocs[0];
    let (acl_id, _) = of_type("AWS::WAFv2::WebACL")[0];
    let acl = get(a, &["Properties", "WebACLArn", "Fn::GetAtt"]).and_then(Value::as_sequence).expect("GetAtt");
    assert_eq!((acl[0].as_str(), acl[1].as_str()), (Some(acl_id), Some("Arn")), "{id}");
    let stage = text(resource("SlackApi"), &["Properties", "StageName"]).expect("StageName");
    assert_eq!(
        text(a, &["Properties", "ResourceArn", "Fn::Sub"]),
        Some(
            format!("arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}::/restapis/${{SlackApi}}/stages/{stage}")
                .as_str()
        ),
        "{id}: the Slack API's stage"
    );
    // SAM names the stage it generates <Api><StageName>Stage (checked with samtranslator): the association
    // must wait for it, or the first deployment fails.
    let depends = strings(get(a, &["DependsOn"]));
    assert!(depends.contains(&format!("SlackApi{stage}Stage")), "{id}: DependsOn {depends:?}");
}

// --- rows 35, 36: the receipt key -------------------------------------------------------------------------

fn receipt_key_statements() -> Vec<&'static Value> {
    let policy = get(resource("ReceiptKey"), &["Properties", "KeyPolicy", "Statement"]).expect("a key policy");
    alternatives(policy)
}

fn principal_aws(stmt: &Value) -> Vec<String> {
    strings(get(stmt, &["Principal", "AWS"]))
}

#[test]
fn t36_receipt_key_is_a_retained_p256_signing_key_with_an_alias() {
    let keys: Vec<&str> = of_type("AWS::KMS::Key").into_iter().map(|(id, _)| id).collect();
    assert_eq!(keys, ["ReceiptKey"]);
    let key = resource("ReceiptKey");
    assert_eq!(text(key, &["Properties", "KeySpec"]), Some("ECC_NIST_P256"), "ES256 needs P-256");
    assert_eq!(text(key, &["Properties", "KeyUsage"]), Some("SIGN_VERIFY"));
    // Receipts already issued must stay verifiable after the stack goes.
    assert_eq!(text(key, &["DeletionPolicy"]), Some("Retain"));
    assert_eq!(text(key, &["UpdateReplacePolicy"]), Some("Retain"));
    let alias = resource("ReceiptKeyAlias");
    assert_eq!(text(alias, &["Type"]), Some("AWS::KMS::Alias"));
    assert_eq!(text(alias, &["Properties", "AliasName", "Fn::Sub"]), Some("alias/${AWS::StackName}-receipts"));
    assert_eq!(text(alias, &["Properties", "TargetKeyId", "Ref"]), Some("ReceiptKey"));
    let out = get(&template()["Outputs"], &["ReceiptKeyArn", "Value"]).expect("output ReceiptKeyArn");
    assert_eq!(describe(out), "ReceiptKey");
}

/// The roles that may sign with the receipt key: request-api (receipts, row 36) and the sweeper (audit
/// checkpoints, row 37).
fn signing_roles() -> Vec<String> {
    vec![role_of(function_by_binary("request-api").1), role_of(function_by_binary("sweeper").1)]
}

#[test]
fn t36_only_the_request_api_and_sweeper_roles_may_sign_with_the_receipt_key() {
    let signers = signing_roles();
    let stmts = receipt_key_statements();
    let signs = |s: &Value| strings(get(s, &["Action"])).iter().any(|a| a == "kms:Sign");

    // One allow of kms:Sign in the key policy, to the signing roles, with the public key and nothing else.
    let allows: Vec<_> = stmts.iter().filter(|s| is_allow(s) && signs(s)).collect();
    assert_eq!(allows.len(), 1, "allows of kms:Sign: {allows:?}");
    assert_eq!(principal_aws(allows[0]), signers);
    assert_eq!(strings(get(allows[0], &["Action"])), ["kms:Sign", "kms:GetPublicKey"]);

    // The account administers the key but neither signs nor hands out grants that could.
    let admin = stmts
        .iter()
        .find(|s| principal_aws(s).iter().any(|p| p.ends_with(":root")))
        .expect("the account root administers the key");
    for banned in ["kms:Sign", "kms:CreateGrant", "kms:Verify"] {
        assert!(!strings(get(admin, &["Action"])).iter().any(|a| a == banned), "the account root may {banned}");
    }
    assert!(strings(get(admin, &["Action"])).iter().any(|a| a == "kms:PutKeyPolicy"), "the key must stay manageable");

    // And an explicit deny of kms:Sign for every principal but that role, whatever else is granted later.
    let deny =
        stmts.iter().find(|s| text(s, &["Effect"]) == Some("Deny") && signs(s)).expect("an explicit deny of kms:Sign");
    let principal = text(deny, &["Principal", "AWS"]).or_else(|| text(deny, &["Principal"]));
    assert_eq!(principal, Some("*"), "the deny covers every principal");
    assert_eq!(strings(get(deny, &["Resource"])), ["*"]);
    let condition = get(deny, &["Condition"]).and_then(Value::as_mapping).expect("the deny's condition");
    assert_eq!(condition.len(), 1, "only ArnNotEquals: {condition:?}");
    let not_equals = get(deny, &["Condition", "ArnNotEquals"]).and_then(Value::as_mapping).expect("ArnNotEquals");
    assert_eq!(not_equals.len(), 1, "{not_equals:?}");
    assert_eq!(strings(not_equals.get("aws:PrincipalArn")), signers);

    // Nowhere else in the template is kms:Sign allowed, and no function role's IAM policy grants any KMS
    // action: the key policy is the one grant.
    for (id, stmt) in all_statements().into_iter().filter(|(_, s)| is_allow(s)) {
        if strings(get(stmt, &["Action"])).iter().any(|a| a.starts_with("kms:Sign") || a.starts_with("kms:*")) {
            assert_eq!(id, "ReceiptKey", "{id} allows kms:Sign");
        }
    }
    for (fid, f) in functions() {
        let kms: Vec<_> = allowed_pairs(&role_of(f)).into_iter().filter(|(a, _)| a.starts_with("kms:")).collect();
        assert!(kms.is_empty(), "{fid}'s role grants {kms:?}");
    }
    for ty in ["AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"] {
        assert!(of_type(ty).is_empty(), "a stand-alone {ty} would escape the per-role checks");
    }
}

#[test]
fn t36_request_api_is_told_the_receipt_key_arn_and_the_issuer() {
    for (fid, f) in functions() {
        let vars = get(f, &["Properties", "Environment", "Variables"]).expect("environment");
        let key = vars.get("COUNTERSIGN_RECEIPT_KEY_ID");
        // The sweeper signs checkpoints (issue 17) with the same key.
        if matches!(binary_of(f), "request-api" | "sweeper") {
            // The key's ARN, never the alias: an alias can be re-pointed at another key.
            let ga = key.and_then(|k| get(k, &["Fn::GetAtt"])).and_then(Value::as_sequence).expect("!GetAtt");
            assert_eq!((ga[0].as_str(), ga[1].as_str()), (Some("ReceiptKey"), Some("Arn")), "{fid}");
            assert_eq!(text(&vars["COUNTERSIGN_RECEIPT_ISSUER"], &["Ref"]), Some("ReceiptIssuer"), "{fid}");
        } else {
            assert!(key.is_none(), "{fid} ({}) does not sign receipts", binary_of(f));
        }
    }
    let p = &template()["Parameters"]["ReceiptIssuer"];
    assert_eq!(text(p, &["Type"]), Some("String"));
    assert_eq!(text(p, &["Default"]), Some(countersign_core::domain::receipt::DEFAULT_ISSUER));
    assert!(p["MaxLength"].as_u64().is_some_and(|n| n <= 256), "the function refuses an issuer over 256");
}

/// SAM's build cache hashes only a function's `CodeUri` (`crates/lambda`): with it on, a change in
/// `crates/core`, `aws` or `slack` would deploy the previous binary. No environment of samconfig.toml may
/// turn it on.
#[test]
fn samconfig_never_caches_builds() {
    let config = read("samconfig.toml");
    let mut section = String::new();
    let mut build_sections = 0;
    for line in config.lines().map(|l| l.split('#').next().unwrap_or("").trim()) {
        if line.starts_with('[') {
            section = line.to_string();
            if section.ends_with(".build.parameters]") {
                build_sections += 1;
            }
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "cached" {
                assert!(section.ends_with(".build.parameters]"), "`cached` outside a build section: {section}");
                assert_eq!(value.trim(), "false", "{section}: sam build must not use its cache");
            }
        }
    }
    assert!(build_sections >= 1, "samconfig.toml has no build parameters");
}

// --- row 37: the audit checkpoints ------------------------------------------------------------------------

fn checkpoint_bucket() -> &'static Value {
    resource("CheckpointBucket")
}

/// The statements of the bucket policy on `CheckpointBucket` (there must be exactly one such policy).
fn checkpoint_bucket_policy() -> Vec<&'static Value> {
    let policies: Vec<_> = of_type("AWS::S3::BucketPolicy")
        .into_iter()
        .filter(|(_, p)| text(p, &["Properties", "Bucket", "Ref"]) == Some("CheckpointBucket"))
        .collect();
    assert_eq!(policies.len(), 1, "one bucket policy on CheckpointBucket");
    get(policies[0].1, &["Properties", "PolicyDocument", "Statement"]).map(alternatives).expect("statements")
}

fn is_everyone(stmt: &Value) -> bool {
    text(stmt, &["Principal"]) == Some("*") || text(stmt, &["Principal", "AWS"]) == Some("*")
}

/// The unconditional denies to every principal of the bucket policy, as (action, resource).
fn unconditional_denies() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for stmt in checkpoint_bucket_policy() {
        if text(stmt, &["Effect"]) != Some("Deny") || !is_everyone(stmt) || get(stmt, &["Condition"]).is_some() {
            continue;
        }
        for action in strings(get(stmt, &["Action"])) {
            for res in strings(get(stmt, &["Resource"])) {
                out.insert((action.clone(), res));
            }
        }
    }
    out
}

#[test]
fn t37_checkpoint_bucket_is_locked_versioned_private_encrypted_and_retained() {
    let buckets: Vec<&str> = of_type("AWS::S3::Bucket").into_iter().map(|(id, _)| id).collect();
    assert_eq!(buckets, ["CheckpointBucket"]);
    let b = checkpoint_bucket();
    // Checkpoints outlive the stack: COMPLIANCE-locked objects could not be deleted anyway.
    assert_eq!(text(b, &["DeletionPolicy"]), Some("Retain"));
    assert_eq!(text(b, &["UpdateReplacePolicy"]), Some("Retain"));
    let p = &b["Properties"];
    assert_eq!(get(p, &["ObjectLockEnabled"]).and_then(Value::as_bool), Some(true));
    assert_eq!(text(p, &["ObjectLockConfiguration", "ObjectLockEnabled"]), Some("Enabled"));
    let retention = get(p, &["ObjectLockConfiguration", "Rule", "DefaultRetention"]).expect("a default retention");
    assert_eq!(text(retention, &["Days", "Ref"]), Some("CheckpointRetentionDays"));
    assert_eq!(text(retention, &["Mode", "Ref"]), Some("CheckpointLockMode"));
    assert!(get(retention, &["Years"]).is_none(), "Days and Years are exclusive");
    assert_eq!(text(p, &["VersioningConfiguration", "Status"]), Some("Enabled"), "Object Lock needs versioning");
    for block in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
        let on = get(p, &["PublicAccessBlockConfiguration", block]).and_then(Value::as_bool);
        assert_eq!(on, Some(true), "{block}");
    }
    let sse = get(p, &["BucketEncryption", "ServerSideEncryptionConfiguration"]).map(alternatives).expect("SSE");
    assert!(!sse.is_empty());
    for rule in sse {
        let algo = text(rule, &["ServerSideEncryptionByDefault", "SSEAlgorithm"]);
        assert!(matches!(algo, Some("AES256" | "aws:kms" | "aws:kms:dsse")), "SSE algorithm {algo:?}");
    }

    let days = &template()["Parameters"]["CheckpointRetentionDays"];
    assert_eq!(text(days, &["Type"]), Some("Number"));
    assert_eq!(days["Default"].as_u64(), Some(400));
    assert!(days["MinValue"].as_u64().is_some_and(|n| n >= 1), "a retention of 0 days is no lock");
    let mode = &template()["Parameters"]["CheckpointLockMode"];
    assert_eq!(text(mode, &["Default"]), Some("COMPLIANCE"));
    assert_eq!(strings(get(mode, &["AllowedValues"])), ["COMPLIANCE", "GOVERNANCE"]);

    // The sweeper is told where to write; the operator where to verify.
    for (fid, f) in functions() {
        let var = get(f, &["Properties", "Environment", "Variables", "COUNTERSIGN_CHECKPOINT_BUCKET"]);
        if binary_of(f) == "sweeper" {
            assert_eq!(var.and_then(|v| text(v, &["Ref"])), Some("CheckpointBucket"), "{fid}");
        } else {
            assert!(var.is_none(), "{fid} ({}) writes no checkpoints", binary_of(f));
        }
    }
    let out = get(&template()["Outputs"], &["CheckpointBucketName", "Value"]).expect("output CheckpointBucketName");
    assert_eq!(describe(out), "CheckpointBucket");
}

#[test]
fn t37_checkpoint_bucket_policy_denies_deletes_lock_changes_and_plain_http_to_everyone() {
    let denies = unconditional_denies();
    for action in ["s3:DeleteObject", "s3:DeleteObjectVersion"] {
        assert!(denies.contains(&(action.to_string(), "CheckpointBucket/*".to_string())), "no deny of {action}");
    }
    assert!(
        denies.contains(&("s3:PutBucketObjectLockConfiguration".to_string(), "CheckpointBucket".to_string())),
        "no deny of s3:PutBucketObjectLockConfiguration"
    );

    let stmts = checkpoint_bucket_policy();
    assert!(stmts.iter().all(|s| text(s, &["Effect"]) == Some("Deny")), "the bucket policy only denies");
    let tls = stmts
        .iter()
        .find(|s| text(s, &["Condition", "Bool", "aws:SecureTransport"]) == Some("false"))
        .expect("a deny of access without TLS");
    assert!(is_everyone(tls), "the TLS deny covers every principal");
    let actions = strings(get(tls, &["Action"]));
    for action in ["s3:GetObject", "s3:PutObject", "s3:ListBucket"] {
        assert!(actions.iter().any(|a| a == action), "the TLS deny misses {action}");
    }
    assert_eq!(strings(get(tls, &["Resource"])), ["CheckpointBucket", "CheckpointBucket/*"]);

    // The same denies outlive the stack with the bucket.
    let (pid, policy) = of_type("AWS::S3::BucketPolicy").into_iter().next().expect("the bucket policy");
    assert_eq!(text(policy, &["DeletionPolicy"]), Some("Retain"), "{pid}");
}

#[test]
fn t37_only_the_sweeper_may_put_checkpoints_and_nothing_may_delete_or_unlock_them() {
    let sweeper = role_of(function_by_binary("sweeper").1);
    // In the template, s3:PutObject is allowed to the sweeper's role alone, below checkpoints/ only.
    for (id, stmt) in all_statements().into_iter().filter(|(_, s)| is_allow(s)) {
        let actions = strings(get(stmt, &["Action"]));
        if actions.iter().any(|a| a == "s3:PutObject") {
            assert_eq!(id, sweeper, "{id} allows s3:PutObject");
            assert_eq!(strings(get(stmt, &["Resource"])), ["CheckpointBucket/checkpoints/*"]);
        }
        for banned in [
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:PutBucketObjectLockConfiguration",
            "s3:PutObjectRetention",
            "s3:PutObjectLegalHold",
            "s3:BypassGovernanceRetention",
            "s3:PutBucketPolicy",
            "s3:DeleteBucketPolicy",
            "s3:PutBucketVersioning",
        ] {
            assert!(!actions.iter().any(|a| a == banned), "{id} allows {banned}");
        }
    }
    for (fid, f) in functions() {
        let s3: Vec<_> = allowed_pairs(&role_of(f)).into_iter().filter(|(a, _)| a.starts_with("s3:")).collect();
        if binary_of(f) != "sweeper" {
            assert!(s3.is_empty(), "{fid}'s role grants {s3:?}");
        }
    }
    // The sweeper lists only the checkpoints.
    let list = role_statements(&sweeper)
        .into_iter()
        .find(|s| is_allow(s) && strings(get(s, &["Action"])).iter().any(|a| a == "s3:ListBucket"))
        .expect("the sweeper lists checkpoints");
    assert_eq!(text(list, &["Condition", "StringLike", "s3:prefix"]), Some("checkpoints/*"));

    // And the bucket policy refuses object writes to every other principal, whatever IAM grants later.
    let deny = checkpoint_bucket_policy()
        .into_iter()
        .find(|s| {
            text(s, &["Effect"]) == Some("Deny")
                && strings(get(s, &["Action"])) == ["s3:PutObject"]
                && get(s, &["Condition", "ArnNotEquals"]).is_some()
        })
        .expect("a deny of s3:PutObject to all but the sweeper");
    assert!(is_everyone(deny));
    assert_eq!(strings(get(deny, &["Resource"])), ["CheckpointBucket/*"]);
    let condition = get(deny, &["Condition"]).and_then(Value::as_mapping).expect("condition");
    assert_eq!(condition.len(), 1, "only ArnNotEquals: {condition:?}");
    assert_eq!(strings(get(deny, &["Condition", "ArnNotEquals", "aws:PrincipalArn"])), [sweeper]);
}

#[test]
fn t37_the_receipt_key_lets_the_sweeper_sign_checkpoints_and_no_other_function() {
    let sweeper = role_of(function_by_binary("sweeper").1);
    let slack = role_of(function_by_binary("slack-interactions").1);
    let stmts = receipt_key_statements();
    let signs = |s: &&Value| strings(get(s, &["Action"])).iter().any(|a| a == "kms:Sign");
    let allow = stmts.iter().find(|s| is_allow(s) && signs(s)).expect("an allow of kms:Sign");
    assert!(principal_aws(allow).contains(&sweeper), "the sweeper may not sign checkpoints");
    assert!(!principal_aws(allow).contains(&slack), "slack-interactions may sign");
    let deny = stmts.iter().find(|s| text(s, &["Effect"]) == Some("Deny") && signs(s)).expect("the deny of kms:Sign");
    let exempt = strings(get(deny, &["Condition", "ArnNotEquals", "aws:PrincipalArn"]));
    assert!(exempt.contains(&sweeper), "the deny still refuses the sweeper: {exempt:?}");
    assert!(!exempt.contains(&slack), "the deny exempts slack-interactions: {exempt:?}");
}

#[test]
fn t37_three_sweeper_runs_owing_a_checkpoint_raise_an_alarm() {
    use countersign_lambda::sweep::{CHECKPOINT_OWED, METRICS_NAMESPACE};
    let (fid, _) = function_by_binary("sweeper");
    let alarms = of_type("AWS::CloudWatch::Alarm");
    let (_, alarm) = alarms
        .iter()
        .find(|(_, a)| text(a, &["Properties", "MetricName"]) == Some(CHECKPOINT_OWED))
        .expect("an alarm on the metric the sweeper publishes");
    let p = &alarm["Properties"];
    assert_eq!(text(p, &["Namespace"]), Some(METRICS_NAMESPACE));
    let dims = p["Dimensions"].as_sequence().expect("Dimensions");
    assert_eq!(dims.len(), 1, "the sweeper publishes one dimension");
    assert_eq!(text(&dims[0], &["Name"]), Some("FunctionName"));
    assert_eq!(describe(&dims[0]["Value"]), fid, "the alarm watches this stack's sweeper");
    // One datapoint a minute (the sweeper's schedule), three of three owed, and owed means every run owed.
    assert_eq!(p["Period"].as_u64(), Some(60));
    assert_eq!(p["EvaluationPeriods"].as_u64(), Some(3));
    assert_eq!(p["DatapointsToAlarm"].as_u64(), Some(3));
    assert_eq!(text(p, &["Statistic"]), Some("Minimum"));
    assert_eq!(p["Threshold"].as_f64().or_else(|| p["Threshold"].as_u64().map(|t| t as f64)), Some(1.0));
    assert_eq!(text(p, &["ComparisonOperator"]), Some("GreaterThanOrEqualToThreshold"));
    assert!(p.get("AlarmActions").is_some(), "it notifies the alarm topic");
}

#[test]
fn t37_checkpoints_are_written_once_even_by_the_sweeper() {
    // A PutObject without If-None-Match adds a new current version over a checkpoint: denied to everyone.
    let stmts = checkpoint_bucket_policy();
    let once = stmts
        .iter()
        .find(|s| text(s, &["Condition", "Null", "s3:if-none-match"]) == Some("true"))
        .expect("a deny of PutObject without If-None-Match");
    assert_eq!(text(once, &["Effect"]), Some("Deny"));
    assert!(is_everyone(once), "it covers every principal, the sweeper included");
    assert_eq!(strings(get(once, &["Action"])), ["s3:PutObject"]);
    assert_eq!(strings(get(once, &["Resource"])), ["CheckpointBucket/*"]);
    assert_eq!(get(once, &["Condition"]).and_then(|c| c.as_mapping()).map(|m| m.len()), Some(1), "no other condition");
}

// --- decision events (issue 19) ---------------------------------------------------------------------------

#[test]
fn events_only_the_sweeper_publishes_on_a_bus_of_its_own_and_deletes_only_outbox_items() {
    assert_eq!(text(resource("EventBus"), &["Type"]), Some("AWS::Events::EventBus"));
    let (sweeper_id, sweeper) = function_by_binary("sweeper");
    for (fid, f) in functions() {
        let bus = get(f, &["Properties", "Environment", "Variables", "COUNTERSIGN_EVENT_BUS"]);
        let publishes = allowed_pairs(&role_of(f)).iter().any(|(a, _)| a.starts_with("events:"));
        if fid == sweeper_id {
            assert_eq!(bus.map(describe).as_deref(), Some("EventBus"), "{fid}");
            assert!(publishes, "{fid}");
        } else {
            assert!(bus.is_none() && !publishes, "{fid}: only the sweeper publishes");
        }
    }
    // The bus policy denies PutEvents to every other principal, so no one else can forge `source: countersign`.
    let policy = resource("EventBusPolicy");
    assert_eq!(describe(&policy["Properties"]["EventBusName"]), "EventBus");
    let stmt = &policy["Properties"]["Statement"];
    assert_eq!(text(stmt, &["Effect"]), Some("Deny"));
    assert_eq!(text(stmt, &["Principal"]), Some("*"));
    assert_eq!(strings(get(stmt, &["Action"])), ["events:PutEvents"]);
    let except = get(stmt, &["Condition", "ArnNotEquals", "aws:PrincipalArn"]).expect("ArnNotEquals aws:PrincipalArn");
    assert_eq!(describe(except), role_of(sweeper));
    // DeleteItem on the requests table is the relay's, and is limited to the outbox partition.
    let deletes: Vec<&Value> = role_statements(&role_of(sweeper))
        .into_iter()
        .filter(|s| is_allow(s) && strings(get(s, &["Action"])).contains(&"dynamodb:DeleteItem".to_string()))
        .collect();
    assert_eq!(deletes.len(), 1);
    let leading = get(deletes[0], &["Condition", "ForAllValues:StringEquals", "dynamodb:LeadingKeys"]);
    assert_eq!(strings(leading), [countersign_aws::dynamodb::keys::OUTBOX_PK]);
}

#[test]
fn events_the_example_webhook_rule_is_parameter_gated_and_an_owed_run_streak_alarms() {
    for id in ["EventsWebhookConnection", "EventsWebhookDestination", "EventsWebhookRule", "EventsWebhookRole"] {
        assert_eq!(text(resource(id), &["Condition"]), Some("HasEventsWebhook"), "{id}");
    }
    let rule = &resource("EventsWebhookRule")["Properties"];
    assert_eq!(describe(&rule["EventBusName"]), "EventBus");
    assert_eq!(strings(get(rule, &["EventPattern", "source"])), ["countersign"]);
    let alarms = of_type("AWS::CloudWatch::Alarm");
    let (_, alarm) = alarms
        .iter()
        .find(|(_, a)| text(a, &["Properties", "MetricName"]) == Some(countersign_lambda::sweep::EVENTS_OWED))
        .expect("an alarm on the metric the sweeper publishes");
    assert_eq!(describe(&alarm["Properties"]["Dimensions"][0]["Value"]), function_by_binary("sweeper").0);
}
