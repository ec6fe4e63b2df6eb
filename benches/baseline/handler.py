"""The Python baseline: a Slack interactivity handler written the way AWS samples write one (boto3 + slack_sdk).

Verifies the Slack signature, parses the payload and records the vote with a conditional write, nothing more
(no policy, no audit chain, no message update): a lower bound of what a Python Countersign would do.
Configuration: BASELINE_TABLE, SLACK_SIGNING_SECRET; the AWS SDK reads AWS_ENDPOINT_URL and friends.
"""
import base64
import json
import os
import time
import urllib.parse

import boto3
from slack_sdk.signature import SignatureVerifier

dynamodb = boto3.client("dynamodb")
verifier = SignatureVerifier(os.environ["SLACK_SIGNING_SECRET"])
TABLE = os.environ["BASELINE_TABLE"]


def lambda_handler(event, context):
    if event.get("httpMethod") != "POST":
        return {"statusCode": 405, "body": ""}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if not verifier.is_valid_request(body, headers):
        return {"statusCode": 401, "body": "invalid signature"}
    payload = json.loads(urllib.parse.parse_qs(body)["payload"][0])
    action = payload["actions"][0]
    try:
        dynamodb.put_item(
            TableName=TABLE,
            Item={
                "pk": {"S": "REQ#" + action["value"]},
                "sk": {"S": "VOTE#" + payload["user"]["id"]},
                "decision": {"S": "approve" if action["action_id"].endswith("approve") else "deny"},
                "at": {"N": str(int(time.time()))},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
    except dynamodb.exceptions.ConditionalCheckFailedException:
        return {"statusCode": 200, "body": "already voted"}
    return {"statusCode": 200, "body": ""}
