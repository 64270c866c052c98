"""Local notification sinks for the end-to-end test: a Slack-compatible webhook and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from support.procs import free_port


@dataclass
class SlackSink:
    """Records every JSON payload POSTed to it, answering like Slack's incoming webhooks ("ok")."""

    url: str
    messages: list[dict] = field(default_factory=list)

    def texts(self) -> list[str]:
        """Title and text of every attachment received, one string per message."""
        return ["\n".join(f"{a.get('title', '')}\n{a.get('text', '')}" for a in message.get("attachments", []))
                for message in list(self.messages)]


@contextlib.contextmanager
def run_slack_sink() -> Iterator[SlackSink]:
    sink = SlackSink(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            sink.messages.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/test"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mail:
    recipients: list[str]
    subject: str
    text: str


@dataclass
class SmtpSink:
    smarthost: str
    mails: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802 - aiosmtpd
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[attr-defined]
        body = message.get_body(preferencelist=("plain", "html"))
        self.mails.append(Mail(list(envelope.rcpt_tos), str(message["Subject"]),  # type: ignore[attr-defined]
                               body.get_content() if body else ""))
        return "250 OK"


@contextlib.contextmanager
def run_smtp_sink() -> Iterator[SmtpSink]:
    port = free_port()
    sink = SmtpSink(smarthost=f"127.0.0.1:{port}")
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
