#!/usr/bin/env bash
# Cold starts of the Lambda binaries (and of the Python baseline) through the local Runtime API stand-in:
# step 2 of scripts/bench, or alone (`scripts/bench --only coldstart` runs this, then the report).
#
#   benches/coldstart/run.sh [OUT]     # results (coldstart-*.json, callgrind.json) in OUT, default target/bench
#
# The first event of each function is a refusal that is written to the audit trail, as an attacker's first
# request would be: request-api gets a create from a caller whose account is not allowed (403, audited as
# `request.refused`), slack-interactions an unsigned callback (401, audited as `callback.rejected`). So a start
# includes the first DynamoDB round trips (the chain head, then the conditional transaction) against the
# emulator, and with them the SDK's HTTP client and TLS set-up; slack-interactions first reads the signing
# secret from Secrets Manager, as for any callback. After the series the audit table must hold one record per
# start, or the run fails.
#
# Uses the emulator at AWS_ENDPOINT_URL when it is set (scripts/bench starts one); otherwise starts its own
# (scripts/moto_serial.py) on a free port of 127.0.0.1. Python: BENCH_PYTHON, else .venv/bin/python (made and
# filled by scripts/bench). Without slack_sdk in that Python the baseline series is skipped. Nothing leaves
# 127.0.0.1. The binaries are built as they ship (`cargo build --release -p countersign-lambda --bins`), or
# taken from COLDSTART_BIN (a directory) as they are. RUNS: starts per series (20).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUT=${1:-$ROOT/target/bench}
RUNS=${RUNS:-20}
PY=${BENCH_PYTHON:-$ROOT/.venv/bin/python}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
mkdir -p "$OUT"
py() { "$PY" "$@"; }

if [ -n "${COLDSTART_BIN:-}" ]; then
  BIN=$COLDSTART_BIN  # binaries built elsewhere (an A/B comparison): used as they are
else
  cargo build --release -p countersign-lambda --bins
fi
for b in request-api slack-interactions; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b was not built"; exit 1; }
done

if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  PORT=$(py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  # The interpreter itself in the background (not the `py` function, whose subshell would be what $! kills).
  "$PY" scripts/moto_serial.py 127.0.0.1 "$PORT" >"$OUT/moto-coldstart.log" 2>&1 &
  MOTO_PID=$!
  trap 'kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true' EXIT
  export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  export NO_PROXY=127.0.0.1,localhost
  unset AWS_PROFILE
  for _ in $(seq 1 100); do
    py -c "import urllib.request; urllib.request.urlopen('$AWS_ENDPOINT_URL/moto-api/', timeout=1)" 2>/dev/null && break
    sleep 0.1
  done
fi

export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}  # boto3 reads only this one
# Lambda sets no SSL_CERT_FILE / SSL_CERT_DIR: neither do the starts here (a shell may, as this machine's sets
# SSL_CERT_DIR=/etc/ssl/certs, 145 more files to read; crates/lambda/src/roots.rs).
unset SSL_CERT_FILE SSL_CERT_DIR
# The function's configuration (docs/configuration.md). Its own audit table per run, so the count is exact.
export AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true RUST_LOG=warn
export COUNTERSIGN_POLICIES_TABLE=cs-bench-policies COUNTERSIGN_REQUESTS_TABLE=cs-bench-requests
export COUNTERSIGN_AUDIT_TABLE="cs-bench-audit-$$"
export COUNTERSIGN_SLACK_SIGNING_SECRET_ID="cs-bench-signing-$$" COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID="cs-bench-bot-$$"
export COUNTERSIGN_SLACK_TEAM_ID=T0TEAM0001 COUNTERSIGN_SLACK_APP_ID=A0APP00001
export COUNTERSIGN_RECEIPT_KEY_ID=alias/countersign-receipts  # request-api's; KMS is not called at start
export COUNTERSIGN_ALLOWED_ACCOUNTS=444455556666  # the fixture's caller is in 111122223333: refused
export SLACK_SIGNING_SECRET=8f742231b10e8888abcd99yyyzzz85a5 BASELINE_TABLE=baseline-votes

# The events; the audit table (only the table a refusal writes; its shape as in
# crates/aws/src/dynamodb/tables.rs, which `countersign store init` creates); the Slack secrets (an unsigned
# callback is checked against the signing secret, read at the first callback, before it is refused).
py - "$ROOT/tests/fixtures/apigw/rest-iam-request.json" "$OUT" <<'PY'
import json, os, sys
import boto3
ev = json.load(open(sys.argv[1]))
json.dump(ev, open(sys.argv[2] + "/event-create-not-allowed.json", "w"))
cb = json.loads(json.dumps(ev))
path = "/slack/interactions"
cb.update({"path": path, "resource": path, "body": "payload=%7B%7D",
           "headers": {"Content-Type": "application/x-www-form-urlencoded", "Host": ev["headers"]["Host"]}})
cb["requestContext"].update({"path": "/Prod" + path, "resourcePath": path})
cb["requestContext"]["identity"].update({"userArn": None, "accountId": None, "caller": None, "user": None,
                                         "accessKey": None})
json.dump(cb, open(sys.argv[2] + "/event-slack-unsigned.json", "w"))
boto3.client("dynamodb").create_table(
    TableName=os.environ["COUNTERSIGN_AUDIT_TABLE"], BillingMode="PAY_PER_REQUEST",
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}],
    AttributeDefinitions=[{"AttributeName": n, "AttributeType": t}
                          for n, t in (("pk", "S"), ("seq", "N"), ("request_id", "S"))],
    GlobalSecondaryIndexes=[{"IndexName": "by-request", "Projection": {"ProjectionType": "ALL"},
                             "KeySchema": [{"AttributeName": "request_id", "KeyType": "HASH"},
                                           {"AttributeName": "seq", "KeyType": "RANGE"}]}])
sm = boto3.client("secretsmanager")
sm.create_secret(Name=os.environ["COUNTERSIGN_SLACK_SIGNING_SECRET_ID"],
                 SecretString=json.dumps({"signing_secret": os.environ["SLACK_SIGNING_SECRET"]}))
sm.create_secret(Name=os.environ["COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID"],
                 SecretString=json.dumps({"bot_token": "xoxb-bench-not-a-token"}))
PY
audit_count() {
  py -c "import boto3,os; print(boto3.client('dynamodb').scan(TableName=os.environ['COUNTERSIGN_AUDIT_TABLE'], Select='COUNT')['Count'])"
}

series() {  # name event status label command...
  local name=$1 event=$2 status=$3 label=$4
  shift 4
  py benches/coldstart/coldstart.py --name "$name" --event "$OUT/$event.json" --runs "$RUNS" \
    --expect-status "$status" --label "$label" --json "$OUT/coldstart-$name.json" -- "$@"
}
before=$(audit_count)
series request-api event-create-not-allowed 403 "POST /v1/requests, account not allowed (403, audited)" \
  "$BIN/request-api"
series slack-interactions event-slack-unsigned 401 "POST /slack/interactions, unsigned (401, audited)" \
  "$BIN/slack-interactions"
after=$(audit_count)
want=$((2 * (RUNS + 1)))  # each series starts once more to warm the page cache
[ "$((after - before))" = "$want" ] || { echo "audit records: $((after - before)) written, $want expected"; exit 1; }
echo "audit records written by the cold starts: $((after - before)) (one per start)"
if py -c "import slack_sdk" 2>/dev/null; then
  series python-baseline event-slack-unsigned 401 "POST /slack/interactions, unsigned (401, not audited)" \
    "$PY" benches/baseline/bootstrap.py
else
  echo "no slack_sdk in $PY: Python baseline skipped"
fi

if command -v valgrind >/dev/null 2>&1; then
  # request-api only: slack-interactions bounds its secret read by 1 s, which valgrind's slowdown exceeds, so
  # there it would answer 503 (another path). Its CPU time is in the table instead.
  echo "cold-start instruction count (callgrind; stable when the machine is busy)"
  py benches/coldstart/coldstart.py --name request-api --event "$OUT/event-create-not-allowed.json" --runs 1 \
    --expect-status 403 -- valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.request-api.%p" \
    "$BIN/request-api" >/dev/null
  py - "$OUT" <<'PY'
import glob, json, os, sys
out = {}
for name in ("request-api",):
    files = sorted(glob.glob(f"{sys.argv[1]}/callgrind.{name}.*"), key=os.path.getmtime)
    for line in open(files[-1]):
        if line.startswith(("summary:", "totals:")):
            out[f"`{name}` cold start, exec → refusal answered and audited (whole process)"] = int(line.split()[1])
            break
json.dump(out, open(f"{sys.argv[1]}/callgrind.json", "w"))
PY
else
  echo "valgrind is not installed: no instruction counts"
fi
