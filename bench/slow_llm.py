"""A scripted OpenAI-compatible upstream for the bench that takes DELAY seconds per answer.

Usage: slow_llm.py DELAY PORT_FILE. Serves on an ephemeral loopback port (written to PORT_FILE)
until killed. Every chat completion, streamed or not, answers the same short text with usage, so
Aider has nothing to edit; `/v1/models` lists `mock`. Many requests are served at once (threads),
so the delay is per answer, not a queue.
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY = float(sys.argv[1])
TEXT = "Nothing needs to change here."
USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.send(200, json.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode())

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        time.sleep(DELAY)
        base = {"id": "bench", "created": int(time.time()), "model": request.get("model", "mock")}
        if not request.get("stream"):
            answer = dict(base, object="chat.completion", usage=USAGE, choices=[
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": TEXT}}])
            return self.send(200, json.dumps(answer).encode())
        chunks = [
            dict(base, object="chat.completion.chunk", choices=[{"index": 0, "delta": {"role": "assistant", "content": TEXT}}]),
            dict(base, object="chat.completion.chunk", usage=USAGE, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        ]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self.send(200, body.encode(), "text/event-stream")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[2], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
