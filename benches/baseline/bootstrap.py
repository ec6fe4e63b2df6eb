"""A minimal Lambda custom-runtime loop for handler.py (the managed Python runtime's loop, awslambdaric, does
the same polling and does a little more work per event)."""
import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import handler  # noqa: E402  (imports boto3 and slack_sdk, creates the client: the init phase)

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while True:
    with opener.open(API + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    out = json.dumps(handler.lambda_handler(event, None)).encode()
    opener.open(urllib.request.Request(API + rid + "/response", data=out, method="POST")).read()
