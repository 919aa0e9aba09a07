#!/usr/bin/env python3
# selftests/e2e/test_jwt.py — routes with auth: jwt through a real clawd: admitted tokens, refusals with their reason, nothing leaked.
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401

t = Tap()
SECRET = b"e2e-secret-0123456789abcdefghijklmnopqrstuvwxyzABCDEF"  # 54 bytes: enough for HS256/384


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def seg(obj):
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def hs256(payload, header=None, secret=SECRET):
    h = seg(header or {"alg": "HS256", "typ": "JWT"})
    p = seg(payload)
    sig = hmac.new(secret, ("%s.%s" % (h, p)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (h, p, b64u(sig))


def rs256(payload, key_pem, kid=None):
    h = {"alg": "RS256", "typ": "JWT"}
    if kid:
        h["kid"] = kid
    data = "%s.%s" % (seg(h), seg(payload))
    p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_pem], input=data.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    return "%s.%s" % (data, b64u(p.stdout))


def claims(**kw):
    now = int(time.time())
    c = {"iss": "https://idp.e2e", "aud": "orders", "sub": "alice", "iat": now - 5, "exp": now + 300}
    c.update(kw)
    return c


def setup_keys(d):
    """An RSA key pair (openssl CLI) and an HMAC secret file of mode 0600 in d."""
    priv, pub, sec = os.path.join(d, "rsa.pem"), os.path.join(d, "rsa.pub.pem"), os.path.join(d, "hs.key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", priv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fd = os.open(sec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, SECRET + b"\n")
    os.close(fd)
    os.chmod(sec, 0o600)
    return priv, pub, sec


def jwt_config(be, pub, sec, **auth):
    a = {"type": "jwt", "algorithms": ["RS256", "HS256"], "keys": pub, "hmac_secret_file": sec,
         "issuer": "https://idp.e2e", "audience": ["orders", "billing"], "leeway": "5s",
         "claims_to_headers": {"sub": "X-User", "tenant": "X-Tenant"}}
    a.update(auth)
    cfg = simple_config(be)
    cfg["routes"] = [
        {"name": "open", "match": {"path_prefix": "/open/"}, "upstream": "pool"},
        {"name": "api", "upstream": "pool", "auth": a},
    ]
    return cfg


KEYDIR = make_tmpdir("clawd-jwt-keys-")
PRIV, PUB, SEC = setup_keys(KEYDIR)


def seen_by_backend(r):
    return json.loads(r.body)["headers"]


@t.test("valid RS256 and HS256 tokens reach the backend with X-User; the token itself does not")
def _():
    with Backend() as be, Clawd(jwt_config(be, PUB, SEC)) as cd:
        for tok in (rs256(claims(tenant="acme"), PRIV), hs256(claims(tenant="acme"))):
            r = get(cd.port, "/orders", headers=[("Authorization", "Bearer " + tok)])
            eq(r.status, 200, "status")
            h = seen_by_backend(r)
            eq(hget(h, "X-User"), "alice", "X-User upstream")
            eq(hget(h, "X-Tenant"), "acme", "X-Tenant upstream")
            eq(hget(h, "Authorization"), None, "token stripped before forwarding")
        cd.stop()


@t.test("expired token: 401 with WWW-Authenticate invalid_token, reason 'expired' in the access log")
def _():
    now = int(time.time())
    with Backend() as be, Clawd(jwt_config(be, PUB, SEC)) as cd:
        tok = rs256(claims(exp=now - 60, iat=now - 600), PRIV)
        r = get(cd.port, "/orders", headers=[("Authorization", "Bearer " + tok)])
        eq(r.status, 401, "status")
        www = hget(r.headers, "WWW-Authenticate") or ""
        check(www.startswith('Bearer error="invalid_token"'), "WWW-Authenticate: %r" % www)
        check('error_description="expired"' in www, "reason in challenge: %r" % www)
        eq(be.counts()["requests"], 0, "backend never saw the request")
        lines = cd.wait_log(1)
        eq(lines[-1].get("status"), 401, "logged status")
        check("expired" in json.dumps(lines[-1]), "reason code in the access log: %r" % lines[-1])
        cd.stop()


@t.test("refusals: missing, bad signature, wrong audience, wrong issuer, alg none, RS->HS confusion")
def _():
    now = int(time.time())
    with open(PUB, "rb") as f:
        pem = f.read()
    good = rs256(claims(), PRIV)
    h, p, s = good.split(".")
    forged = "%s.%s.%s" % (h, seg(claims(sub="mallory")), s)
    cases = [
        ("no token", None, "Bearer"),
        ("bad signature", forged, "bad_signature"),
        ("wrong audience", rs256(claims(aud=["shipping"]), PRIV), "wrong_audience"),
        ("wrong issuer", rs256(claims(iss="https://evil.e2e"), PRIV), "wrong_issuer"),
        ("alg none", "%s.%s." % (seg({"alg": "none"}), seg(claims())), "alg_not_allowed"),
        ("RS->HS with the PEM as secret", hs256(claims(), secret=pem), "bad_signature"),
        ("not yet valid", rs256(claims(nbf=now + 600), PRIV), "not_yet_valid"),
    ]
    with Backend() as be, Clawd(jwt_config(be, PUB, SEC)) as cd:
        for what, tok, want in cases:
            hdrs = [("Authorization", "Bearer " + tok)] if tok else []
            r = get(cd.port, "/orders", headers=hdrs)
            eq(r.status, 401, what)
            www = hget(r.headers, "WWW-Authenticate") or ""
            if tok:
                check(('error_description="%s"' % want) in www, "%s: %r" % (what, www))
            else:
                eq(www, "Bearer", what)
        # A client-supplied X-User never reaches the backend, even when the token lacks the claim.
        tok = rs256({k: v for k, v in claims().items() if k != "sub"}, PRIV)
        r = get(cd.port, "/orders", headers=[("Authorization", "Bearer " + tok), ("X-User", "admin")])
        eq(r.status, 200, "token without sub")
        eq(hall(seen_by_backend(r), "X-User"), [""], "spoofed X-User replaced by the (empty) claim")
        # The route without auth is untouched.
        eq(get(cd.port, "/open/x").status, 200, "open route")
        cd.stop()


@t.test("tokens never appear in the access log or clawd's stderr")
def _():
    now = int(time.time())
    toks = [rs256(claims(), PRIV), rs256(claims(exp=now - 100, iat=now - 900), PRIV),
            hs256(claims(aud="nobody")), "x" + rs256(claims(), PRIV)[1:]]
    with Backend() as be, Clawd(jwt_config(be, PUB, SEC)) as cd:
        for tok in toks:
            get(cd.port, "/orders?q=1", headers=[("Authorization", "Bearer " + tok)])
        cd.wait_log(len(toks))
        cd.stop()
        with open(cd.access_log) as f:
            alog = f.read()
        err = cd.stderr()
        for tok in toks:
            for part in [tok] + tok.split(".")[1:]:
                check(part not in alog, "token part in the access log")
                check(part not in err, "token part on stderr")


@t.test("clawd --check refuses a secret file readable by others and names the key")
def _():
    d = make_tmpdir("clawd-jwt-check-")
    loose = os.path.join(d, "loose.key")
    with open(loose, "wb") as f:
        f.write(SECRET)
    os.chmod(loose, 0o644)
    with Backend() as be:
        cfg = jwt_config(be, PUB, loose)
        cfg["control"] = {"socket": os.path.join(d, "ctl.sock")}
        path = os.path.join(d, "c.yaml")
        with open(path, "w") as f:
            f.write(to_yaml(cfg) + "\n")
        rc, out, err = run_clawd(["--check", "-c", path])
        check(rc != 0, "--check must fail, got rc %d" % rc)
        check("routes[1].auth.hmac_secret_file" in err and "mode 0644" in err, "message: %r" % err)
        os.chmod(loose, 0o600)
        rc, out, err = run_clawd(["--check", "-c", path])
        eq(rc, 0, "--check with mode 0600: " + err)


t.main()
