"""moto's server with one request at a time: moto's DynamoDB transactions are not isolated from each
other when its threaded server runs them concurrently (a cancelled transaction restores a table
snapshot over writes that committed meanwhile), which breaks concurrency tests that are correct on
real DynamoDB. Connections are still accepted concurrently; only request handling is serialized.
Transactions roll back with an undo log of the items they touch instead of whole-table copies
(scripts/moto_undo_log.py), so their cost does not grow with the tables."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moto_undo_log  # noqa: E402

moto_undo_log.install()

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialized(environ, start_response):
    with lock:
        body = app(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            close = getattr(body, "close", None)
            if close:
                close()


run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)
