#!/usr/bin/env bash
# Proves the browser tooling end to end on this machine: serves a small sign-up form from a temp
# directory on 127.0.0.1 (a few lines of Python's http.server, which also answers the POST with an
# HttpOnly cookie and a redirect), drives it with run.mjs, and checks the JSON result. Then checks
# that a failing step exits non-zero with the page's URL and text.
#   bash infra/browser/selftest.sh        (after bash infra/browser.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work=$(mktemp -d)
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/signup.html" <<'HTML'
<!doctype html>
<html><head><title>Sign up</title></head>
<body>
  <h1>Create your account</h1>
  <form method="post" action="/signup">
    <label>Email <input id="email" name="email" type="email"></label>
    <label>Password <input id="password" name="password" type="password"></label>
    <label><input id="terms" name="terms" type="checkbox" value="yes"> I agree</label>
    <button id="submit" type="submit">Sign up</button>
  </form>
</body></html>
HTML

cat >"$work/server.py" <<'PY'
import http.server, sys, urllib.parse

class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        email = form.get("email", [""])[0]
        if form.get("terms") != ["yes"]:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"terms not accepted")
            return
        self.send_response(303)
        self.send_header("Set-Cookie", "session=abc123; Path=/; HttpOnly; SameSite=Lax")
        self.send_header("Set-Cookie", "theme=dark; Path=/; SameSite=Strict")
        self.send_header("Location", "/welcome?email=" + urllib.parse.quote(email))
        self.end_headers()

    def do_GET(self):
        if self.path.startswith("/welcome"):
            email = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["email"][0]
            body = f"<title>Welcome</title><p id='greeting'>Welcome, {email}!</p>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY

cd "$work"
python3 server.py >"$work/port" &
server_pid=$!
for _ in $(seq 50); do [[ -s "$work/port" ]] && break; sleep 0.1; done
port=$(cat "$work/port")
base="http://127.0.0.1:$port"

cat >"$work/steps.json" <<JSON
{
  "baseURL": "$base",
  "steps": [
    {"action": "goto", "url": "/signup.html"},
    {"action": "expectText", "selector": "h1", "text": "Create your account"},
    {"action": "fill", "selector": "#email", "value": "ada@example.com"},
    {"action": "fill", "selector": "#password", "value": "correct horse"},
    {"action": "check", "selector": "#terms"},
    {"action": "click", "selector": "#submit"},
    {"action": "waitForURL", "pattern": "**/welcome?*"},
    {"waitForSelector": {"selector": "#greeting"}},
    {"action": "expectText", "text": "Welcome, ada@example.com!"},
    {"action": "screenshot", "path": "$work/welcome.png"}
  ]
}
JSON

start=$(date +%s%N)
result=$(node "$here/run.mjs" "$work/steps.json")
echo "run.mjs took $((($(date +%s%N) - start) / 1000000)) ms: $result"
python3 - "$result" "$base" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["ok"] is True, r
assert r["url"] == sys.argv[2] + "/welcome?email=ada%40example.com", r["url"]
assert r["title"] == "Welcome", r["title"]
assert "Welcome, ada@example.com!" in r["text"], r["text"]
cookies = {c["name"]: c for c in r["cookies"]}
assert cookies["session"]["httpOnly"] is True and cookies["session"]["sameSite"] == "Lax", cookies
assert cookies["theme"]["httpOnly"] is False and cookies["theme"]["sameSite"] == "Strict", cookies
PY
[[ -s "$work/welcome.png" ]] || { echo "FAIL: no screenshot written" >&2; exit 1; }

# A failing step: submit without ticking the box; the expected text never appears.
cat >"$work/fail.json" <<JSON
{"baseURL": "$base", "timeoutMs": 2000, "steps": [
  {"action": "goto", "url": "/signup.html"},
  {"action": "click", "selector": "#submit"},
  {"action": "expectText", "text": "Welcome"}
]}
JSON
set +e
failure=$(node "$here/run.mjs" "$work/fail.json" 2>"$work/fail.err")
code=$?
set -e
echo "failing run exited $code; stderr:"
sed 's/^/    /' "$work/fail.err"
[[ $code -eq 1 ]] || { echo "FAIL: expected exit 1, got $code" >&2; exit 1; }
python3 - "$failure" "$base" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["ok"] is False and r["failedStep"] == 2, r
assert r["url"] == sys.argv[2] + "/signup", r["url"]
assert r["text"] == "terms not accepted", r["text"]
PY
grep -q "url:   $base/signup" "$work/fail.err" || { echo "FAIL: stderr lacks the URL" >&2; exit 1; }

# When the test OIDC provider runs (bash infra/oidc.sh), sign in through its login form in the
# browser, the way an SSO UI test does; the redirect lands on this temp server with a code.
issuer="${CUTTLE_OIDC_ISSUER:-http://127.0.0.1:9400}"
if curl -fsS --max-time 2 "$issuer/.well-known/openid-configuration" >/dev/null 2>&1; then
    redirect_uri="$base/signup.html"
    query="client_id=cuttle&response_type=code&scope=openid%20email%20profile%20groups&state=st1&nonce=n1"
    query+="&redirect_uri=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$redirect_uri")"
    query+="&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    cat >"$work/sso.json" <<JSON
{"steps": [
  {"action": "goto", "url": "$issuer/auth?$query"},
  {"action": "expectText", "selector": "h1", "text": "Sign in"},
  {"action": "fill", "selector": "#login", "value": "alice"},
  {"action": "fill", "selector": "#password", "value": "alice-password"},
  {"action": "click", "selector": "#submit"},
  {"action": "waitForURL", "regex": "^$(printf '%s' "$redirect_uri" | sed 's/[.]/\\\\./g')\\\\?code=[^&]+&state=st1"},
  {"action": "expectText", "selector": "h1", "text": "Create your account"}
]}
JSON
    sso=$(node "$here/run.mjs" "$work/sso.json")
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["ok"] and "code=" in r["url"], r; print("SSO sign-in through the OIDC login form in chromium reached", r["url"].split("?")[0] + "?code=...")' "$sso"
else
    echo "(no OIDC provider at $issuer: skipped the SSO sign-in check)"
fi
echo "browser selftest: OK"
