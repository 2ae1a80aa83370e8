#!/usr/bin/env python3
"""A real SMTP server (PyPI aiosmtpd) for Cuttle's mail tests: every message it accepts becomes
one .eml file in a directory, so that a test can read the mail it caused.

    python infra/smtp/server.py --port 2525 --dir DIR [--host 127.0.0.1] [--user U --password P]

infra/smtp.sh runs it from its own venv, in the background, with a pid file and a log.

Each file is named <UTC time>-<sequence>-<first recipient>.eml (the recipient reduced to
[A-Za-z0-9@._+-]) and holds the message exactly as received, preceded by two added headers:
`X-Envelope-From:` (MAIL FROM) and `X-Envelope-To:` (every RCPT TO, comma-separated). Files are
written under a temporary name and renamed, so a reader never sees half a message.

AUTH PLAIN and LOGIN are offered without TLS. With --user/--password, clients must authenticate
with exactly that pair; without them authentication is optional and any pair is accepted (so a
client configured with credentials works too).
"""
import argparse
import itertools
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def log(message):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}", flush=True)


class SaveToDirectory:
    def __init__(self, directory):
        self.directory = directory
        self.sequence = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            number = next(self.sequence)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else "nobody"
        safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", first)[:100]
        name = f"{stamp}-{number:06d}-{safe}.eml"
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        added = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode("utf-8")
        temporary = os.path.join(self.directory, f".{name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(added + content)
        os.replace(temporary, os.path.join(self.directory, name))
        log(f"saved {name}: from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}, {len(content)} bytes")
        return f"250 OK saved as {name}"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        if user is None:
            return AuthResult(success=True)
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        if not ok:
            log(f"AUTH {mechanism} refused for {auth_data.login.decode(errors='replace')!r}")
        # handled=False: aiosmtpd itself answers 535 to a refused pair (with the default
        # handled=True it would answer nothing and the client would hang).
        return AuthResult(success=ok, handled=False)

    return authenticate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--dir", required=True, help="where .eml files are written")
    parser.add_argument("--user", help="require AUTH with this user (and --password)")
    parser.add_argument("--password")
    args = parser.parse_args()
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")

    os.makedirs(args.dir, exist_ok=True)
    # aiosmtpd's own errors (a handler exception, a dropped client) go to the log; its warnings
    # about AUTH without TLS are the point of a loopback test server, so they are left out.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").addFilter(
        lambda record: not any(noise in record.getMessage() for noise in ("auth_require_tls", "login_data"))
    )
    warnings.filterwarnings("ignore", module="aiosmtpd")
    controller = Controller(
        SaveToDirectory(args.dir),
        hostname=args.host,
        port=args.port,
        server_hostname="cuttle-test-smtp",
        authenticator=authenticator_for(args.user, args.password),
        auth_required=args.user is not None,
        auth_require_tls=False,
        enable_SMTPUTF8=True,
    )
    controller.start()
    log(f"aiosmtpd listening on {args.host}:{args.port}, writing .eml files to {args.dir}"
        f"{'; AUTH required' if args.user else ''}")

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stopping.set())
    stopping.wait()
    log("stopping")
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
