# selftests/e2e/test_metrics_more.py — /metrics families of the gate and health modules: auth results, rate-limit
# and quota rejections, server state, health checks, ejections and breaker trips, counted exactly under a known mix.
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (Backend, Clawd, Skip, Tap, check, eq, free_port, get, make_tmpdir,  # noqa: E402
                     remove_tmpdir, wait_for)

t = Tap()
CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(os.path.dirname(harness.CLAWD), "clawctl")
PROMTOOL = shutil.which("promtool")
CHECK = {"type": "tcp", "interval": "100ms", "jitter": "0%", "timeout": "80ms", "rise": 1, "fall": 2}


def ctl_json(cd, *args):
    p = subprocess.run([CLAWCTL, "-s", cd.config["control"]["socket"], "--json"] + list(args),
                       capture_output=True, timeout=10)
    check(p.returncode == 0, "clawctl %s: %s" % (" ".join(args), p.stderr.decode()))
    return json.loads(p.stdout)


def scrape(cd):
    port = int(cd.config["admin"]["address"].rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    eq(head.split(b"\r\n")[0].split()[1], b"200", "/metrics status")
    return body.decode()


def sample(text, name, **labels):
    """The value of one series (exact label set), None when absent."""
    for ln in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", ln)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(4))
    return None


def promtool_check(text):
    if not PROMTOOL:
        return
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    check(p.returncode == 0, "promtool check metrics failed (%d):\n%s%s" % (
        p.returncode, p.stdout.decode(), p.stderr.decode()))


def config(st, be, down, e1, e2):
    return {
        "workers": 2,
        "state_dir": st,
        "control": {"socket": os.path.join(st, "ctl.sock")},
        "admin": {"address": "127.0.0.1:%d" % free_port()},
        "tiers": [{"name": "free", "rate": "1000/s", "burst": 1000}],
        "timeouts": {"connect": "1s", "upstream_response": "5s"},
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [
            {"name": "pool", "servers": [be.addr, down.addr], "health": dict(CHECK)},
            {"name": "ej", "servers": [e1.addr, e2.addr],
             "outlier": {"consecutive_failures": 2, "base_ejection": "60s"}},
        ],
        "routes": [
            {"name": "keyed", "match": {"path_prefix": "/k/"}, "upstream": "pool", "auth": "api_key"},
            {"name": "perip", "match": {"path_prefix": "/ip/"}, "upstream": "pool",
             "limits": [{"key": "ip", "rate": "1/m", "burst": 3}]},
            {"name": "eject", "match": {"path_prefix": "/e/"}, "upstream": "ej"},
        ],
    }


@t.test("auth, rate-limit, health and ejection counters match a known request mix exactly; promtool accepts them")
def _():
    st = make_tmpdir("clawd-metr-")
    try:
        with Backend(name="a") as be, Backend(name="b") as down, Backend(name="e1") as e1, \
                Backend(name="e2") as e2, Clawd(config(st, be, down, e1, e2)) as cd:
            key = ctl_json(cd, "keys", "create", "--name", "m", "--tier", "free")["key"]
            key2 = ctl_json(cd, "keys", "create", "--name", "m2", "--tier", "free")["key"]
            kid = key[4:16]
            # Same id, another key's (well-formed) secret; and an id no key has (the id reversed).
            bad = key[:17] + key2[17:]
            unknown = key[:4] + kid[::-1] + key[16:]
            check(kid[::-1] != kid and kid[::-1] != key2[4:16], "reversed id differs")
            before = scrape(cd)
            promtool_check(before)
            # Every family is there from the start, at zero.
            eq(sample(before, "openclaw_auth_results_total", route="keyed", result="ok"), 0, "ok before")
            check('openclaw_auth_results_total{route="keyed",result="missing"} 0' in before, before)
            check('openclaw_ratelimit_rejections_total{route="perip",key="ip"} 0' in before, before)
            check('openclaw_quota_rejections_total{route="keyed",period="day"} 0' in before, before)
            # Take a server down first so the mix is served by the healthy one only.
            down.close()
            wait_for(lambda: sample(scrape(cd), "openclaw_upstream_server_up", upstream="pool",
                                    server=down.addr) == 0, 3, 0.02, what="b reported down")

            n_ok, n_missing, n_unknown, n_wrong, burst, n_over = 7, 4, 2, 3, 3, 5
            for i in range(n_ok):
                eq(get(cd.port, "/k/%d" % i, headers=[("X-API-Key", key)]).status, 200, "valid key")
            for i in range(n_missing):
                eq(get(cd.port, "/k/m%d" % i).status, 401, "missing key")
            for i in range(n_unknown):
                eq(get(cd.port, "/k/u", headers=[("X-API-Key", unknown)]).status, 401, "unknown key")
            for i in range(n_wrong):
                eq(get(cd.port, "/k/w", headers=[("X-API-Key", bad)]).status, 401, "wrong secret")
            codes = [get(cd.port, "/ip/%d" % i).status for i in range(burst + n_over)]
            eq(codes, [200] * burst + [429] * n_over, "ip limit statuses")
            for i in range(6):
                get(cd.port, "/e/%d?status=503" % i)

            after = scrape(cd)
            promtool_check(after)
            res = lambda r: sample(after, "openclaw_auth_results_total", route="keyed", result=r)  # noqa: E731
            eq(res("ok"), n_ok, "auth ok")
            eq(res("missing"), n_missing, "auth missing")
            eq(res("unknown_key"), n_unknown, "auth unknown key")
            eq(res("malformed"), 0, "auth malformed")
            eq(res("wrong_secret"), n_wrong, "auth wrong secret")
            eq(res("revoked") + res("expired") + res("out_of_scope"), 0, "no other refusals")
            eq(sample(after, "openclaw_ratelimit_rejections_total", route="perip", key="ip"), n_over,
               "ip limit rejections")
            eq(sample(after, "openclaw_ratelimit_rejections_total", route="keyed", key="key_tier"), 0,
               "tier rejections")
            eq(sample(after, "openclaw_quota_rejections_total", route="keyed", period="day"), 0, "quota")
            check(kid not in after, "key ids stay out of /metrics (cardinality)")

            up = lambda s: sample(after, "openclaw_upstream_server_up", upstream="pool", server=s)  # noqa: E731
            eq(up(be.addr), 1, "healthy server up")
            eq(up(down.addr), 0, "closed server down")
            eq(sample(after, "openclaw_upstream_server_state", upstream="pool", server=down.addr,
                      state="down"), 1, "state{down}")
            eq(sample(after, "openclaw_upstream_server_state", upstream="pool", server=down.addr,
                      state="up"), 0, "state{up} of the down server")
            eq(sample(after, "openclaw_health_checks_total", upstream="pool", server=be.addr, result="fail"),
               0, "no failed check on the healthy server")
            check(sample(after, "openclaw_health_checks_total", upstream="pool", server=be.addr,
                         result="ok") >= 1, "passed checks counted")
            check(sample(after, "openclaw_health_checks_total", upstream="pool", server=down.addr,
                         result="fail") >= CHECK["fall"], "failed checks counted (at least fall)")
            ej = [sample(after, "openclaw_upstream_ejections_total", upstream="ej", server=s)
                  for s in (e1.addr, e2.addr)]
            eq(sorted(ej), [0, 1], "exactly one ejection (the pool's share allows one)")
            eq(sum(sample(after, "openclaw_upstream_server_state", upstream="ej", server=s, state="ejected")
                   for s in (e1.addr, e2.addr)), 1, "one server in state ejected")
            eq(sample(after, "openclaw_breaker_trips_total", upstream="pool", server="", kind="max_requests"),
               0, "no breaker trip")
    finally:
        remove_tmpdir(st)


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256(payload, secret):
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64u(json.dumps(payload).encode())
    sig = hmac.new(secret, ("%s.%s" % (h, p)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (h, p, b64u(sig))


@t.test("jwt refusals are counted by reason code: 3 ok, 2 expired, 1 bad signature, 2 missing")
def _():
    st = make_tmpdir("clawd-metr-")
    secret = b"metrics-e2e-secret-0123456789abcdefghijklmnopqrstuvwxyz"
    try:
        sec = os.path.join(st, "hs.key")
        fd = os.open(sec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, secret + b"\n")
        os.close(fd)
        with Backend() as be:
            cfg = {
                "admin": {"address": "127.0.0.1:%d" % free_port()},
                "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
                "upstreams": [{"name": "pool", "servers": [be.addr]}],
                "routes": [{"name": "tok", "upstream": "pool",
                            "auth": {"type": "jwt", "algorithms": ["HS256"], "hmac_secret_file": sec}}],
            }
            with Clawd(cfg) as cd:
                now = int(time.time())
                good = hs256({"sub": "a", "exp": now + 300}, secret)
                old = hs256({"sub": "a", "exp": now - 300}, secret)
                forged = hs256({"sub": "a", "exp": now + 300}, secret + b"x")
                for tok, n, want in ((good, 3, 200), (old, 2, 401), (forged, 1, 401), (None, 2, 401)):
                    for _ in range(n):
                        h = [("Authorization", "Bearer " + tok)] if tok else []
                        eq(get(cd.port, "/x", headers=h).status, want, "status")
                text = scrape(cd)
                promtool_check(text)
                res = lambda r: sample(text, "openclaw_auth_results_total", route="tok", result=r)  # noqa: E731
                eq(res("ok"), 3, "ok")
                eq(res("jwt_expired"), 2, "expired")
                eq(res("jwt_bad_signature"), 1, "bad signature")
                eq(res("jwt_missing_token"), 2, "missing")
                eq(res("missing"), None, "api_key results are not listed on a jwt route")
    finally:
        remove_tmpdir(st)


@t.test("/metrics with the new families passes promtool")
def _():
    if not PROMTOOL:
        raise Skip("promtool not installed (Debian package prometheus)")
    st = make_tmpdir("clawd-metr-")
    try:
        with Backend() as be, Backend() as d, Backend() as e1, Backend() as e2, \
                Clawd(config(st, be, d, e1, e2)) as cd:
            text = scrape(cd)
            promtool_check(text)
            for fam in ("openclaw_auth_results_total", "openclaw_ratelimit_rejections_total",
                        "openclaw_quota_rejections_total", "openclaw_upstream_server_up",
                        "openclaw_upstream_server_state", "openclaw_health_checks_total",
                        "openclaw_upstream_ejections_total", "openclaw_breaker_trips_total"):
                check("# TYPE %s " % fam in text, "family %s missing" % fam)
    finally:
        remove_tmpdir(st)


if __name__ == "__main__":
    t.main()
