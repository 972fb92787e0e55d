"Alert receivers for tests: a real webhook server and a real SMTP server (aiosmtpd) on loopback, and their fixtures."
import http.server, json, socket, threading
from email import message_from_bytes
import pytest


class Receiver:
    "A webhook receiver: a real HTTP server on loopback in a thread; answers `fail` 503s before succeeding"
    def __init__(self, port=0, fail=0):
        self.got, self.fail, self.requests = [], fail, 0
        me = self
        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                me.requests += 1
                ok = me.fail <= 0
                me.fail -= 1
                if ok: me.got.append(body)
                self.send_response(200 if ok else 503); self.end_headers()
            def log_message(self, *a): pass
        self.srv = http.server.ThreadingHTTPServer(('127.0.0.1', port), H)
        self.port = self.srv.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
    def stop(self): self.srv.shutdown(); self.srv.server_close()


from parkml.central import free_port   # the one port picker (never the same port twice)


class Mailbox:
    "A real SMTP server (aiosmtpd) on loopback that keeps what it receives"
    def __init__(self):
        from aiosmtpd.controller import Controller
        self.msgs = []
        me = self
        class Handler:
            async def handle_DATA(self, server, session, envelope):
                me.msgs.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
                return '250 OK'
        self.port = free_port()
        self.ctl = Controller(Handler(), hostname='127.0.0.1', port=self.port)
        self.ctl.start()
    def stop(self): self.ctl.stop()


@pytest.fixture
def receiver():
    r = Receiver(); yield r; r.stop()

@pytest.fixture
def mailbox():
    m = Mailbox(); yield m; m.stop()
