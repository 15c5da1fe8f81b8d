"""The kubelet's HTTPS API, as far as this agent has one: GET /containerLogs (logs.py), which
the API server calls for `kubectl logs`. Its serving certificate is of the cluster CA, and
every client must present a certificate of that CA (the API server's kubelet client
certificate), so no one else reads the logs."""
from __future__ import annotations

import select
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .common import log
from .logs import LogError, copy_log, parse

HANDSHAKE_TIMEOUT_S = 10
IO_TIMEOUT_S = 60  # a client that stops reading a follow stream frees its thread


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    """Server side TLS that requires a client certificate signed by client_ca."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.0: a log's body ends when the connection closes, which suits follow."""
    server: KubeletAPI
    timeout = IO_TIMEOUT_S

    def do_GET(self):
        url = urlsplit(self.path)
        try:
            req = parse(self.server.pods_root, url.path,
                        dict(parse_qsl(url.query, keep_blank_values=True)))
        except LogError as e:
            self.reply(e.status, f"{e}\n".encode())
            return
        self.reply(200)
        try:
            copy_log(req, self.wfile.write, self.client_gone)
        except OSError:  # ssl.SSLError too
            pass  # the client went away mid-stream

    def reply(self, status: int, body: bytes | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        if body is not None:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is not None:
            self.wfile.write(body)

    def client_gone(self, timeout: float) -> bool:
        """Waits up to `timeout` s for the client to hang up. The request was read in full
        and HTTP/1.0 sends no second one, so a readable socket means EOF or close_notify."""
        return bool(select.select([self.connection], [], [], timeout)[0])

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.info("kubelet API: %s %s", self.address_string(), format % args)


class KubeletAPI(ThreadingHTTPServer):
    """Listens on (host, port) at once (port 0: a free one, see .port); serve_forever()
    answers, one thread per connection."""
    daemon_threads = True  # a follow in progress must not hold up the agent's exit

    def __init__(self, pods_root: Path, host: str, port: int, tls: ssl.SSLContext):
        super().__init__((host, port), Handler)
        # The handshake runs in the connection's thread (finish_request), not in accept():
        # a client that stalls it must not stop the server from accepting others.
        self.socket = tls.wrap_socket(self.socket, server_side=True,
                                      do_handshake_on_connect=False)
        self.pods_root = pods_root

    @property
    def port(self) -> int:
        return self.server_address[1]

    def finish_request(self, request, client_address):
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            request.do_handshake()
        except OSError as e:  # ssl.SSLError: no client certificate, or not of the CA
            log.info("kubelet API: refused %s: %s", client_address[0], e)
            return
        super().finish_request(request, client_address)
