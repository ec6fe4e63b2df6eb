"""Warm per-callback latency of the Python baseline against the emulator: signed block_actions callbacks,
each for a new request, through handler.lambda_handler in process (as a warm Lambda runs it).

  measure.py --n 300 --json OUT.json      (needs AWS_ENDPOINT_URL to a local emulator)
"""
import argparse
import hashlib
import hmac
import json
import os
import resource
import sys
import time
import urllib.parse
import uuid

os.environ.setdefault("SLACK_SIGNING_SECRET", "8f742231b10e8888abcd99yyyzzz85a5")
os.environ.setdefault("BASELINE_TABLE", "baseline-votes-" + uuid.uuid4().hex[:8])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import handler  # noqa: E402


def signed_event(request_id: str, user: str) -> dict:
    payload = {
        "type": "block_actions", "api_app_id": "A0APP00001", "team": {"id": "T0TEAM0001", "domain": "example"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEAM0001"},
        "container": {"type": "message", "message_ts": "1795621462.000100", "channel_id": "C0APPROVALS"},
        "channel": {"id": "C0APPROVALS", "name": "approvals"},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "response_url": "http://127.0.0.1:9/response/r1",
        "actions": [{"type": "button", "action_id": "countersign_approve", "block_id": "countersign_actions",
                     "value": request_id, "action_ts": "1795621462.000100"}],
    }
    body = "payload=" + urllib.parse.quote(json.dumps(payload), safe="")
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(os.environ["SLACK_SIGNING_SECRET"].encode(), f"v0:{ts}:{body}".encode(),
                           hashlib.sha256).hexdigest()
    return {"httpMethod": "POST", "path": "/slack/interactions", "isBase64Encoded": False, "body": body,
            "headers": {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
                        "X-Slack-Signature": sig}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--json")
    a = ap.parse_args()
    assert os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1"), "needs a local emulator"
    handler.dynamodb.create_table(
        TableName=handler.TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    for i in range(20):  # warm up
        handler.lambda_handler(signed_event(f"warm{i}", "UALICE0001"), None)
    times = []
    for i in range(a.n):
        ev = signed_event(f"01KAXS{i:020d}", "UALICE0001")
        t = time.perf_counter()
        out = handler.lambda_handler(ev, None)
        times.append((time.perf_counter() - t) * 1000)
        assert out["statusCode"] == 200 and out["body"] == "", out
    times.sort()
    res = {"n": a.n, "p50_ms": times[len(times) // 2], "p99_ms": times[int(0.99 * (len(times) - 1))],
           "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    print(json.dumps(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
