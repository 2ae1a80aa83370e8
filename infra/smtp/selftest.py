#!/usr/bin/env python3
"""Proves the test SMTP server end to end: sends mail with Python's smtplib and reads it back
from the .eml file the server wrote, the way a Rust test finds its invitation mail.

    python3 infra/smtp/selftest.py [PORT [MAIL_DIR]]
    (defaults: 2525 and $HOME/.cache/cuttle/smtp-mail/<port>)
"""
import email
import email.policy
import glob
import os
import smtplib
import sys
import time
import uuid
from email.message import EmailMessage


def wait_for_mail(mail_dir, recipient, timeout=5.0):
    """What a test does: find the file named after its (unique) recipient, waiting briefly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        matches = sorted(glob.glob(os.path.join(mail_dir, f"*-{recipient}.eml")))
        if matches:
            return matches
        time.sleep(0.05)
    raise AssertionError(f"no .eml for {recipient} in {mail_dir} within {timeout} s")


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 2525
    cache = os.environ.get("CUTTLE_CACHE_DIR", os.path.expanduser("~/.cache/cuttle"))
    mail_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(cache, "smtp-mail", str(port))

    invitee = f"invitee-{uuid.uuid4().hex[:12]}@example.com"
    message = EmailMessage()
    message["From"] = "Cuttle <noreply@cuttle.example>"
    message["To"] = invitee
    message["Subject"] = "You are invited to Cuttle – join “Acme”"
    message.set_content("Accept your invitation: http://127.0.0.1:8080/invitations/abc123\n")

    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("auth"), "AUTH is not offered"
        # A client configured with credentials must work too: any pair is accepted by default.
        smtp.login("cuttle", "anything")
        refused = smtp.send_message(message, to_addrs=[invitee, "bcc-copy@example.com"])
        assert refused == {}, refused
    [path] = wait_for_mail(mail_dir, invitee)
    elapsed_ms = (time.monotonic() - started) * 1000

    with open(path, "rb") as handle:
        received = email.message_from_binary_file(handle, policy=email.policy.default)
    assert received["X-Envelope-From"] == "noreply@cuttle.example", received["X-Envelope-From"]
    assert received["X-Envelope-To"] == f"{invitee}, bcc-copy@example.com", received["X-Envelope-To"]
    assert received["To"] == invitee and received["Subject"] == message["Subject"], dict(received)
    body = received.get_body(preferencelist=("plain",)).get_content()
    assert "http://127.0.0.1:8080/invitations/abc123" in body, body
    print(f"sent and found in {elapsed_ms:.0f} ms: {path}")
    print(f"  Subject: {received['Subject']}")
    print(f"  X-Envelope-To: {received['X-Envelope-To']}")
    print("smtp selftest: OK")


if __name__ == "__main__":
    main()
