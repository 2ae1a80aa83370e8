#!/usr/bin/env bash
# Proves the test-tool dependencies work on this machine: installs and starts them (browser.sh,
# oidc.sh, smtp.sh), then runs each one's end-to-end check. Extra instances it needs (a foreign
# OIDC issuer on 9401, an SMTP server requiring AUTH on 2526) are stopped again if it started them.
#   bash infra/selftest.sh
set -euo pipefail
INFRA_NAME=selftest
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"

started_foreign=""
started_auth_smtp=""
cleanup() {
    if [[ -n "$started_foreign" ]]; then bash "$here/oidc.sh" stop --port 9401 >/dev/null; fi
    if [[ -n "$started_auth_smtp" ]]; then bash "$here/smtp.sh" stop --port 2526 >/dev/null; fi
}
trap cleanup EXIT

bash "$here/browser.sh"
bash "$here/oidc.sh"
bash "$here/smtp.sh"

echo "--- oidc (issuer 9400, foreign issuer 9401)"
if ! bash "$here/oidc.sh" status --port 9401 >/dev/null 2>&1; then
    bash "$here/oidc.sh" --port 9401 >/dev/null
    started_foreign=1
fi
python3 "$here/oidc/selftest.py" http://127.0.0.1:9400 http://127.0.0.1:9401

echo "--- browser"
bash "$here/browser/selftest.sh"

echo "--- smtp"
python3 "$here/smtp/selftest.py" 2525

echo "--- smtp with AUTH required (port 2526)"
if ! bash "$here/smtp.sh" status --port 2526 >/dev/null 2>&1; then
    CUTTLE_SMTP_USER=mailer CUTTLE_SMTP_PASSWORD=mailer-secret bash "$here/smtp.sh" --port 2526 >/dev/null
    started_auth_smtp=1
fi
python3 - <<'PY'
import smtplib
with smtplib.SMTP("127.0.0.1", 2526, timeout=10) as smtp:
    smtp.ehlo()
    try:
        smtp.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nx")
        raise SystemExit("FAIL: mail accepted without AUTH")
    except smtplib.SMTPSenderRefused as err:
        assert err.smtp_code == 530, err
    try:
        smtp.login("mailer", "wrong")
        raise SystemExit("FAIL: wrong password accepted")
    except smtplib.SMTPAuthenticationError as err:
        assert err.smtp_code == 535, err
    smtp.login("mailer", "mailer-secret")
    smtp.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nx")
print("AUTH required: refused without AUTH (530) and with a wrong password (535), accepted with the right one")
PY

echo "selftest: OK"
