"""scripts/moto_serial.py (one request at a time) plus a tally of DynamoDB and Secrets Manager operations, so
the cost model counts what the code really sends: GET /bench/counts returns the tally as JSON
({"DynamoDB_20120810.Query": 3, "TransactWriteItems.items": 12, "BatchGetItem.items": 4, ...}); POST /bench/counts/reset clears it.

  python benches/moto_counting.py 127.0.0.1 PORT
"""
import json
import os
import sys
import threading
from collections import Counter

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import moto_undo_log  # noqa: E402

moto_undo_log.install()

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
counts = Counter()


def counting(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/bench/counts"):
        if environ.get("REQUEST_METHOD") == "POST":
            with lock:
                counts.clear()
        body = json.dumps(dict(counts)).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(n) if n else b""
        import io

        environ["wsgi.input"] = io.BytesIO(raw)
        with lock:
            counts[target] += 1
            if target.endswith("TransactWriteItems"):
                try:
                    items = json.loads(raw).get("TransactItems", [])
                    counts["TransactWriteItems.items"] += len(items)
                except ValueError:
                    pass
            elif target.endswith("BatchGetItem"):
                try:
                    tables = json.loads(raw).get("RequestItems", {}).values()
                    counts["BatchGetItem.items"] += sum(len(t.get("Keys", [])) for t in tables)
                except ValueError:
                    pass
    with lock:
        body = app(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            close = getattr(body, "close", None)
            if close:
                close()


run_simple(host, port, counting, threaded=True, request_handler=MotoRequestHandler)
