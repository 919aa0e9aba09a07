# selftests/e2e/test_timeouts.py — every timeout fires with the right status, near its configured value.
import os
import select
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Backend, Blackhole, Clawd, Client, Closed, Skip, Tap, check, eq,  # noqa: E402
                     free_port, get, simple_config)

t = Tap()

# The worker checks deadlines every 100 ms: allow that plus scheduling slack.
SLACK = 0.6


def timed_config(*servers, **timeouts):
    cfg = simple_config(*servers)
    cfg["timeouts"] = dict({"connect": "2s", "client_header": "5s", "client_body": "5s",
                            "idle": "5s", "upstream_response": "5s", "upstream_idle": "5s"},
                           **timeouts)
    return cfg


def within(took, lo, hi, what):
    check(lo <= took <= hi, "%s took %.3fs, want %.2f..%.2fs" % (what, took, lo, hi))


@t.test("backend down (nothing listening): 502 fast")
def _():
    down = "127.0.0.1:%d" % free_port()
    with Clawd(timed_config(down)) as cd:
        t0 = time.monotonic()
        r = get(cd.port, "/")
        took = time.monotonic() - t0
        eq(r.status, 502, "status")
        within(took, 0, 1.0, "502")
        log = cd.wait_log(1)
        eq((log[-1]["status"], log[-1]["upstream"]), (502, down), "access log status, upstream")


@t.test("slow backend: 504 after upstream_response")
def _():
    with Backend() as be, Clawd(timed_config(be, upstream_response="500ms")) as cd, \
            Client(cd.port) as c:
        t0 = time.monotonic()
        c.send(b"GET /slow?sleep_ms=4000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response(timeout=5)
        took = time.monotonic() - t0
        eq(r.status, 504, "status")
        within(took, 0.45, 0.5 + SLACK, "504")
        check(c.closed(2), "client connection still open after 504")
        be.release.set()


@t.test("connect timeout (SYNs dropped by a full accept queue): 504 after connect")
def _():
    with Blackhole() as bh:
        if not bh.is_black(0.5):
            raise Skip("this kernel completed a connect to a listener with a full queue; "
                       "cannot make a connect hang")
        with Clawd(timed_config(bh.addr, connect="500ms")) as cd:
            t0 = time.monotonic()
            r = get(cd.port, "/")
            took = time.monotonic() - t0
            eq(r.status, 504, "status")
            within(took, 0.45, 0.5 + SLACK, "connect timeout")


@t.test("client sends half a head and stalls: 408 after client_header")
def _():
    with Backend() as be, Clawd(timed_config(be, client_header="500ms")) as cd, \
            Client(cd.port) as c:
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: a.te")
        r = c.response(timeout=4)
        took = time.monotonic() - t0
        eq(r.status, 408, "status")
        within(took, 0.45, 0.5 + SLACK, "408")
        check(c.closed(3), "connection still open after 408")
        eq(be.counts()["raw_bytes"], 0, "bytes at the backend")


@t.test("client trickles a head byte by byte: 408 after client_header in total")
def _():
    with Backend() as be, Clawd(timed_config(be, client_header="800ms")) as cd, \
            Client(cd.port) as c:
        t0 = time.monotonic()
        data = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: " + b"s" * 100
        st = None
        for b in data:
            try:
                c.send(bytes([b]))
            except OSError:
                break
            # Stop trickling as soon as the proxy has answered.
            if select.select([c.sock], [], [], 0.05)[0]:
                break
            if time.monotonic() - t0 > 3:
                break
        try:
            st = c.response(timeout=3).status
        except Closed:
            pass
        took = time.monotonic() - t0
        eq(st, 408, "status")
        check(took < 0.8 + SLACK + 0.2, "408 took %.2fs: the header timeout restarted on each byte"
              % took)


@t.test("idle keep-alive connection closed silently after idle")
def _():
    with Backend() as be, Clawd(timed_config(be, idle="500ms")) as cd, Client(cd.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 200, "first request")
        t0 = time.monotonic()
        check(c.closed(3), "idle connection not closed")
        took = time.monotonic() - t0
        within(took, 0.4, 0.5 + SLACK, "idle close")


@t.test("request body stalls: 408 after client_body, backend gets no complete request")
def _():
    with Backend() as be, Clawd(timed_config(be, client_body="500ms")) as cd, \
            Client(cd.port) as c:
        c.send(b"POST /b HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n0123456789")
        t0 = time.monotonic()
        st = None
        try:
            st = c.response(timeout=4).status
        except Closed:
            pass
        took = time.monotonic() - t0
        eq(st, 408, "status")
        within(took, 0.45, 0.5 + SLACK, "408")
        check(c.closed(3), "connection still open after 408")
        eq(be.counts()["complete"], 0, "complete requests at the backend")


@t.test("response body stalls: connection closed after upstream_idle")
def _():
    with Backend() as be, Clawd(timed_config(be, upstream_idle="500ms")) as cd, \
            Client(cd.port) as c:
        c.send(b"GET /p?partial=1&size=1000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        t0 = time.monotonic()
        got = bytearray()
        try:
            c.response(timeout=4, sink=got.extend)
            raise AssertionError("a truncated response was completed")
        except Closed:
            pass
        took = time.monotonic() - t0
        eq(len(got), 500, "body bytes before the stall")
        within(took, 0.45, 0.5 + SLACK, "close on stalled response")
        be.release.set()


@t.test("first server down: requests still succeed on the next (connect_tries)")
def _():
    down = "127.0.0.1:%d" % free_port()
    with Backend(name="up") as be, Clawd(timed_config(down, be)) as cd:
        for i in range(6):
            r = get(cd.port, "/r%d" % i)
            eq(r.status, 200, "status of request %d" % i)
            eq(r.json()["backend"], "up", "backend of request %d" % i)
        eq(be.counts()["requests"], 6, "requests at the live server")


@t.test("connect_tries: 1 gives a 502 when the picked server is down")
def _():
    down = "127.0.0.1:%d" % free_port()
    with Backend(name="up") as be:
        cfg = timed_config(down, be)
        cfg["upstreams"][0]["connect_tries"] = 1
        with Clawd(cfg) as cd:
            st = sorted(get(cd.port, "/r%d" % i).status for i in range(4))
            eq(st, [200, 200, 502, 502], "statuses over four round-robin requests")


@t.test("whole-request timeout on a route: 504 after timeouts.request")
def _():
    with Backend() as be:
        cfg = timed_config(be)
        cfg["routes"][0]["timeouts"] = {"request": "700ms"}
        with Clawd(cfg) as cd, Client(cd.port) as c:
            t0 = time.monotonic()
            c.send(b"GET /slow?sleep_ms=3000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            r = c.response(timeout=4)
            took = time.monotonic() - t0
            eq(r.status, 504, "status")
            within(took, 0.65, 0.7 + SLACK, "request timeout")
            be.release.set()


@t.test("half a second request head on a kept-alive connection: 408 after client_header")
def _():
    with Backend() as be, Clawd(timed_config(be, client_header="500ms")) as cd, \
            Client(cd.port) as c:
        c.send(b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 200, "first")
        t0 = time.monotonic()
        c.send(b"GET /second HTTP/1.1\r\nHo")
        try:
            st = c.response(timeout=4).status
        except Closed:
            st = None
        took = time.monotonic() - t0
        eq(st, 408, "status")
        within(took, 0.45, 0.5 + SLACK, "408")


t.main()
