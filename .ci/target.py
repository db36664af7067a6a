"""A real HTTP target for .ci/clients: answers 200 to everything on 127.0.0.1 and
appends each call (method, path, body in base64) as a JSON line to a file.

Usage: python .ci/target.py RECORD_FILE PORT_FILE   (binds a free port, writes it to PORT_FILE)"""

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorder(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(sys.argv[1], "a", encoding="utf-8") as out:
            out.write(json.dumps({"method": self.command, "path": self.path,
                                  "body": base64.b64encode(body).decode()}) + "\n")  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
with open(sys.argv[2], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
