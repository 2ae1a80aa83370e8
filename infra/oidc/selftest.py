#!/usr/bin/env python3
"""Proves the test OIDC provider end to end with nothing but Python's standard library.

    python3 infra/oidc/selftest.py [ISSUER [FOREIGN_ISSUER]]
    (defaults: http://127.0.0.1:9400 and, if it answers, http://127.0.0.1:9401)

Drives the same plain-HTTP flow a Rust test drives with reqwest and a cookie jar: discovery,
authorization request with PKCE (S256), the login form, the redirect back with a code, the token
request (client_secret_basic and client_secret_post), RS256 verification of the ID token against
the provider's JWKS, the groups claim, /me; and the refusals: wrong password, missing PKCE,
redirect URI not registered, cancelled sign-in. Uses the clients and accounts of
infra/oidc/default-config.json.
"""
import base64
import hashlib
import http.cookiejar
import json
import re
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def client():
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())


def request(opener, url, data=None, headers=None):
    """Returns (status, headers, body) without following redirects."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def b64url_decode(value):
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verify_rs256(token, jwks):
    """RSASSA-PKCS1-v1_5 with SHA-256, by hand: enough to prove the signature is real."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(b64url_decode(header_b64))
    assert header["alg"] == "RS256", header
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    n = int.from_bytes(b64url_decode(key["n"]), "big")
    e = int.from_bytes(b64url_decode(key["e"]), "big")
    signature = int.from_bytes(b64url_decode(signature_b64), "big")
    size = (n.bit_length() + 7) // 8
    em = pow(signature, e, n).to_bytes(size, "big")
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    digest = hashlib.sha256(f"{header_b64}.{payload_b64}".encode()).digest()
    expected = b"\x00\x01" + b"\xff" * (size - 3 - len(digest_info) - len(digest)) + b"\x00" + digest_info + digest
    assert em == expected, "ID token signature does not verify against the JWKS"
    return header, json.loads(b64url_decode(payload_b64))


def authorize(issuer, client_id, redirect_uri, pkce=True, extra=None):
    """Starts a flow; returns (opener, interaction URL or final redirect, verifier, state, nonce)."""
    opener = client()
    verifier = b64url(secrets.token_bytes(32))
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    params = {
        "client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri,
        "scope": "openid email profile groups", "state": state, "nonce": nonce,
    }
    if pkce:
        params["code_challenge"] = b64url(hashlib.sha256(verifier.encode()).digest())
        params["code_challenge_method"] = "S256"
    params.update(extra or {})
    status, headers, body = request(opener, f"{issuer}/auth?{urllib.parse.urlencode(params)}")
    return opener, status, headers, body, verifier, state, nonce


def full_flow(issuer, client_id, secret, method, redirect_uri, login, password):
    opener, status, headers, _, verifier, state, nonce = authorize(issuer, client_id, redirect_uri)
    assert status == 303, f"authorization request answered {status}"
    interaction_url = urllib.parse.urljoin(issuer, headers["Location"])
    assert re.fullmatch(re.escape(issuer) + r"/interaction/[A-Za-z0-9_-]+", interaction_url), interaction_url

    status, _, form = request(opener, interaction_url)
    assert status == 200 and 'name="login"' in form and 'name="password"' in form, (status, form)
    action = re.search(r'<form id="login-form" method="post" action="([^"]+)"', form).group(1)
    assert urllib.parse.urljoin(issuer, action) == interaction_url + "/login", action

    status, _, body = request(opener, interaction_url + "/login", {"login": login, "password": "wrong"})
    assert status == 401 and "Wrong login or password." in body, status

    status, headers, _ = request(opener, interaction_url + "/login", {"login": login, "password": password})
    assert status == 303, f"login POST answered {status}"
    resume = urllib.parse.urljoin(issuer, headers["Location"])
    assert resume.startswith(f"{issuer}/auth/"), resume

    status, headers, _ = request(opener, resume)
    assert status == 303, f"resume answered {status}"
    callback = headers["Location"]
    assert callback.startswith(redirect_uri + "?"), callback
    query = urllib.parse.parse_qs(urllib.parse.urlparse(callback).query)
    assert query["state"] == [state] and query["iss"] == [issuer], query
    code = query["code"][0]

    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier}
    token_headers = {}
    if method == "client_secret_basic":
        credentials = f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(secret)}"
        token_headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    else:
        form.update(client_id=client_id, client_secret=secret)
    status, _, body = request(client(), f"{issuer}/token", form, token_headers)
    assert status == 200, f"token endpoint answered {status}: {body}"
    tokens = json.loads(body)
    assert tokens["token_type"] == "Bearer" and "access_token" in tokens and "id_token" in tokens, tokens

    jwks = json.loads(request(client(), f"{issuer}/jwks")[2])
    header, claims = verify_rs256(tokens["id_token"], jwks)
    assert claims["iss"] == issuer and claims["aud"] == client_id and claims["nonce"] == nonce, claims

    status, _, body = request(client(), f"{issuer}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert status == 200, (status, body)
    userinfo = json.loads(body)

    # The code is single-use; replaying it also revokes what it issued (RFC 6749 section 4.1.2).
    status, _, body = request(client(), f"{issuer}/token", form, token_headers)
    assert status == 400 and "invalid_grant" in body, (status, body)
    return header, claims, userinfo


def main():
    issuer = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9400"
    foreign = sys.argv[2] if len(sys.argv) > 2 else None
    if foreign is None:
        try:
            urllib.request.urlopen("http://127.0.0.1:9401/.well-known/openid-configuration", timeout=2)
            foreign = "http://127.0.0.1:9401"
        except OSError:
            pass

    discovery = json.loads(request(client(), f"{issuer}/.well-known/openid-configuration")[2])
    assert discovery["issuer"] == issuer, discovery
    assert discovery["code_challenge_methods_supported"] == ["S256"], discovery
    assert "groups" in discovery["scopes_supported"] and "groups" in discovery["claims_supported"], discovery
    print(f"discovery ok: {issuer} authorization={discovery['authorization_endpoint']} token={discovery['token_endpoint']}")

    # Client `cuttle` (client_secret_basic, loopback_redirects "any"): any loopback port and path.
    header, claims, userinfo = full_flow(issuer, "cuttle", "cuttle-oidc-secret", "client_secret_basic",
                                         "http://127.0.0.1:43117/some/callback", "alice", "alice-password")
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com", claims
    assert claims["email_verified"] is True and claims["name"] == "Alice Admin", claims
    assert claims["groups"] == ["cuttle-admins", "developers"], claims
    assert userinfo["groups"] == claims["groups"], userinfo
    print(f"code+PKCE flow ok (client_secret_basic): kid={header['kid']} id_token claims={json.dumps(claims, sort_keys=True)}")

    # Client `cuttle-post` (client_secret_post, "any-port"): registered path, another port; login by email.
    _, claims, _ = full_flow(issuer, "cuttle-post", "cuttle-oidc-post-secret", "client_secret_post",
                             "http://127.0.0.1:51234/api/users/authenticatedToken/OpenIDConnect",
                             "bob@example.com", "bob-password")
    assert claims["sub"] == "bob" and claims["groups"] == ["developers"], claims
    print("code+PKCE flow ok (client_secret_post, login by email): sub=bob groups=['developers']")

    # Refusals.
    _, status, headers, _, *_ = authorize(issuer, "cuttle", "http://127.0.0.1:43117/cb", pkce=False)
    assert status == 303 and "error=invalid_request" in headers["Location"], (status, dict(headers))
    print(f"no PKCE refused: {urllib.parse.unquote(headers['Location'])}")

    _, status, _, body, *_ = authorize(issuer, "cuttle-strict",
                                       "http://127.0.0.1:9999/api/users/authenticatedToken/OpenIDConnect")
    assert status == 400 and "redirect_uri" in body, (status, body)
    print("unregistered redirect_uri refused for cuttle-strict (400, no redirect)")

    opener, status, headers, *_ = authorize(issuer, "cuttle", "http://127.0.0.1:43117/cb")
    status, headers, _ = request(opener, urllib.parse.urljoin(issuer, headers["Location"]) + "/abort")
    status, headers, _ = request(opener, urllib.parse.urljoin(issuer, headers["Location"]))
    assert status == 303 and "error=access_denied" in headers["Location"], (status, dict(headers))
    print("cancelled sign-in redirects with error=access_denied")

    if foreign:
        foreign_header, foreign_claims, _ = full_flow(foreign, "cuttle", "cuttle-oidc-secret", "client_secret_basic",
                                                      "http://127.0.0.1:43117/cb", "alice", "alice-password")
        assert foreign_claims["iss"] == foreign and foreign_header["kid"] != header["kid"], (foreign_claims, foreign_header)
        print(f"foreign issuer ok: {foreign} signs with its own key kid={foreign_header['kid']}")
    print("oidc selftest: OK")


if __name__ == "__main__":
    main()
