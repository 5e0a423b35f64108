"""Small apps for machines in end-to-end tests (stdlib only), shared by the test files."""

#: An HTTP server on $PORT answering with its machine id (404 for ``/missing``); ``/slow``
#: takes a second (an in-flight request to drain); ``/hits`` counts the times it was asked
#: (a check's output then changes on every run); SIGTERM ends it at once.
ECHO_ID_APP = """
import itertools, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

hits = itertools.count(1)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(1.0)
        body = os.environ["FLY_MACHINE_ID"].encode()
        if self.path == "/hits":
            body = b"hits %d" % next(hits)
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
