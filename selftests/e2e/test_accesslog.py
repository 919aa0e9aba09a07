# selftests/e2e/test_accesslog.py — one JSON line per exchange, every documented field with the right value.
import datetime
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Backend, Clawd, Client, Tap, check, eq, free_port, hall  # noqa: E402

t = Tap()

FIELDS = ("time", "client", "method", "path", "status", "bytes_in", "bytes_out", "route",
          "upstream", "upstream_ms", "total_ms", "request_id")


def config(be, **kw):
    cfg = {
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [{"name": "pool", "servers": [be.addr]}],
        "routes": [
            {"name": "health", "match": {"path": "/healthz"}, "respond": {"status": 200, "body": "ok\n"}},
            {"name": "api", "match": {"path_prefix": "/api/"}, "upstream": "pool"},
        ],
    }
    cfg.update(kw)
    return cfg


@t.test("a proxied request: every field present with the right value")
def _():
    with Backend() as be, Clawd(config(be)) as cd, Client(cd.port) as c:
        body = b"0123456789" * 10
        req = (b"POST /api/items?debug=1 HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n"
               % len(body)) + body
        before = time.time()
        c.send(req + b"")
        r = c.response()
        eq(r.status, 200, "status")
        got_bytes = c.consumed()
        rid = hall([tuple(p) for p in r.json()["headers"]], "X-Request-ID")
        (e,) = cd.wait_log(1)
        for f in FIELDS:
            check(f in e, "field %s missing from %r" % (f, e))
        check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", e["time"]),
              "time %r is not RFC 3339 UTC" % e["time"])
        ts = datetime.datetime.strptime(e["time"][:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        check(abs(ts - before) < 5, "time %s is %.1fs away from now" % (e["time"], ts - before))
        eq(e["client"], "127.0.0.1", "client")
        eq(e["method"], "POST", "method")
        eq(e["path"], "/api/items", "path (without the query)")
        eq(e["status"], 200, "status")
        eq(e["bytes_in"], len(req), "bytes_in (head + body)")
        eq(e["bytes_out"], got_bytes, "bytes_out (what the client received)")
        eq(e["route"], "api", "route")
        eq(e["upstream"], be.addr, "upstream")
        check(isinstance(e["upstream_ms"], (int, float)) and e["upstream_ms"] >= 0,
              "upstream_ms %r" % e["upstream_ms"])
        check(isinstance(e["total_ms"], (int, float)) and e["total_ms"] >= e["upstream_ms"],
              "total_ms %r < upstream_ms %r" % (e["total_ms"], e["upstream_ms"]))
        eq(rid, [e["request_id"]], "request_id equals the X-Request-ID the backend saw")


@t.test("timings: upstream_ms and total_ms cover a 300 ms backend")
def _():
    with Backend() as be, Clawd(config(be)) as cd:
        with Client(cd.port) as c:
            c.send(b"GET /api/slow?sleep_ms=300 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            eq(c.response().status, 200, "status")
        (e,) = cd.wait_log(1)
        check(290 <= e["upstream_ms"] < 1500, "upstream_ms %r for a 300 ms backend" % e["upstream_ms"])
        check(e["total_ms"] >= e["upstream_ms"], "total_ms %r < upstream_ms" % e["total_ms"])


@t.test("one line per exchange, in order, on a keep-alive connection")
def _():
    with Backend() as be, Clawd(config(be)) as cd, Client(cd.port) as c:
        paths = ["/api/a", "/healthz", "/nowhere", "/api/b"]
        for p in paths:
            c.send(b"GET %s HTTP/1.1\r\nHost: a.test\r\n\r\n" % p.encode())
            c.response()
        time.sleep(0.3)
        log = cd.wait_log(4)
        eq(len(log), 4, "lines")
        eq([e["path"] for e in log], paths, "paths")
        eq([e["status"] for e in log], [200, 200, 404, 200], "statuses")
        eq([e["route"] for e in log], ["api", "health", None, "api"], "routes")
        eq([e["upstream"] for e in log], [be.addr, None, None, be.addr], "upstreams")
        eq([e["upstream_ms"] is None for e in log], [False, True, True, False],
           "upstream_ms null exactly when no backend answered")
        ids = [e["request_id"] for e in log]
        eq(len(set(ids)), 4, "distinct request ids %r" % ids)


@t.test("a rejected request is logged with its status and an error")
def _():
    with Backend() as be, Clawd(config(be)) as cd, Client(cd.port) as c:
        c.send(b"GET /api/x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        eq(c.response().status, 400, "status")
        (e,) = cd.wait_log(1)
        eq(e["status"], 400, "status")
        check(e.get("error"), "no error field: %r" % e)
        eq(e["upstream"], None, "upstream")


@t.test("a failed backend is logged with 502, the upstream tried and an error")
def _():
    with Backend() as be:
        down = "127.0.0.1:%d" % free_port()
        cfg = config(be)
        cfg["upstreams"][0]["servers"] = [down]
        with Clawd(cfg) as cd, Client(cd.port) as c:
            c.send(b"GET /api/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
            eq(c.response().status, 502, "status")
            (e,) = cd.wait_log(1)
            eq((e["status"], e["upstream"], e["route"]), (502, down, "api"), "status, upstream, route")
            check(e.get("error"), "no error field: %r" % e)


t.main()
