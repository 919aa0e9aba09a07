# selftests/e2e/test_ratelimit.py — rate limits end to end: measured GCRA rate, one limit shared by two workers, 429 headers, limits show.
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Backend, Clawd, Tap, check, eq, free_port, make_tmpdir, remove_tmpdir  # noqa: E402

t = Tap()
CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(os.path.dirname(harness.CLAWD), "clawctl")


def config(be, state, workers=2, tier_rate="50/s", tier_burst=10, limits=None, headers=True):
    return {
        "workers": workers,
        "state_dir": state,
        "control": {"socket": os.path.join(state, "ctl.sock")},
        "tiers": [{"name": "free", "rate": tier_rate, "burst": tier_burst}],
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [{"name": "pool", "servers": [be.addr]}],
        "routes": [
            {"name": "keyed", "match": {"path_prefix": "/k/"}, "upstream": "pool", "auth": "api_key",
             "rate_limit_headers": headers},
            {"name": "perip", "match": {"path_prefix": "/ip/"}, "upstream": "pool",
             "limits": limits or [{"key": "ip", "rate": "1/m", "burst": 20}],
             "rate_limit_headers": headers},
            {"name": "perhdr", "match": {"path_prefix": "/h/"}, "upstream": "pool",
             "limits": [{"key": "header:X-User", "rate": "1/m", "burst": 2}]},
        ],
    }


def ctl_json(cd, *args):
    p = subprocess.run([CLAWCTL, "-s", cd.config["control"]["socket"], "--json"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    check(p.returncode == 0, "clawctl %s: %s" % (" ".join(args), p.stderr.decode()))
    return json.loads(p.stdout)


class Conn:
    """A keep-alive connection sending GETs and reading status + headers + the (small) body."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, path, headers=()):
        req = "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path, "".join(h + "\r\n" for h in headers))
        self.s.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise AssertionError("connection closed")
            self.buf += d
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for ln in lines[1:]:
            n, _, v = ln.partition(":")
            hdrs[n.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            d = self.s.recv(65536)
            if not d:
                raise AssertionError("connection closed mid-body")
            rest += d
        self.buf = rest[n:]
        return int(lines[0].split()[1]), hdrs

    def close(self):
        self.s.close()


def with_state(fn):
    def run():
        d = make_tmpdir("clawd-rl-")
        try:
            fn(d)
        finally:
            remove_tmpdir(d)
    return run


@t.test("tier limit measured: 10 s at 2x the rate admits rate*time+burst within 2%")
@with_state
def _(st):
    rate, burst, secs = 50, 10, 10.0
    with Backend() as be, Clawd(config(be, st, tier_rate="%d/s" % rate, tier_burst=burst)) as cd:
        key = ctl_json(cd, "keys", "create", "--name", "meter", "--tier", "free")["key"]
        c = Conn(cd.port)
        ok = denied = 0
        interval = 1.0 / (2 * rate)
        t0 = time.monotonic()
        nxt = t0
        last = t0
        while time.monotonic() - t0 < secs:
            s, h = c.get("/k/x", ["X-API-Key: " + key])
            last = time.monotonic()
            if s == 200:
                ok += 1
            else:
                eq(s, 429, "status over the limit")
                denied += 1
            nxt += interval
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
        c.close()
        want = burst + rate * (last - t0)
        harness.note("accepted %d, denied %d, expected %.1f over %.2fs" % (ok, denied, want, last - t0))
        check(abs(ok - want) <= 0.02 * want, "accepted %d, want %.1f ± 2%%" % (ok, want))
        check(denied > 0.3 * (ok + denied), "the client really ran at about twice the rate")


@t.test("two workers share one limit exactly: burst 20 admits 20 of 120 parallel requests")
@with_state
def _(st):
    with Backend() as be, Clawd(config(be, st, workers=2)) as cd:
        results = []
        lock = threading.Lock()

        def run():
            c = Conn(cd.port)
            try:
                for _ in range(15):
                    s, h = c.get("/ip/x")
                    with lock:
                        results.append((s, h))
            finally:
                c.close()

        th = [threading.Thread(target=run) for _ in range(8)]
        for x in th:
            x.start()
        for x in th:
            x.join(30)
        eq(len(results), 120, "responses")
        ok = [h for s, h in results if s == 200]
        no = [h for s, h in results if s == 429]
        eq(len(ok), 20, "admitted (burst 20, 1/m refill)")
        eq(len(no), 100, "refused with 429")
        for h in no:
            check(int(h["retry-after"]) >= 1, "Retry-After on 429: %r" % h)
            eq(h["ratelimit-limit"], "20", "RateLimit-Limit")
            eq(h["ratelimit-remaining"], "0", "RateLimit-Remaining on 429")
        rem = sorted(int(h["ratelimit-remaining"]) for h in ok)
        eq(rem, list(range(20)), "RateLimit-Remaining counts down on successful responses")
        show = ctl_json(cd, "limits", "show", "--ip", "127.0.0.1")
        eq(show["routes"][0]["remaining"], 0, "limits show --ip")


@t.test("header-keyed limit: each value has its own bucket; headers off → no RateLimit-* on 200")
@with_state
def _(st):
    with Backend() as be, Clawd(config(be, st, headers=False)) as cd:
        c = Conn(cd.port)
        got = [c.get("/h/x", ["X-User: a"])[0] for _ in range(3)]
        eq(got, [200, 200, 429], "user a")
        s, h = c.get("/h/x", ["X-User: b"])
        eq(s, 200, "user b has its own bucket")
        check("ratelimit-limit" not in h, "no RateLimit-* on success when rate_limit_headers is false")
        s, h = c.get("/ip/x")
        check("ratelimit-limit" not in h, "perip with headers off")
        c.close()


@t.test("limits show --key reports the key's remaining burst")
@with_state
def _(st):
    with Backend() as be, Clawd(config(be, st, tier_rate="1/m", tier_burst=5)) as cd:
        r = ctl_json(cd, "keys", "create", "--name", "m", "--tier", "free")
        c = Conn(cd.port)
        for _ in range(3):
            eq(c.get("/k/x", ["X-API-Key: " + r["key"]])[0], 200, "within burst")
        c.close()
        show = ctl_json(cd, "limits", "show", "--key", r["id"])
        eq(show["limit"], 5, "limit")
        eq(show["remaining"], 2, "remaining after 3 of 5")
        ctl_json(cd, "keys", "set", r["id"], "--rate", "1000/s", "--burst", "1000")
        c = Conn(cd.port)
        eq(c.get("/k/x", ["X-API-Key: " + r["key"]])[0], 200, "override applies at once")
        c.close()


t.main()
