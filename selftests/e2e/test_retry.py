#!/usr/bin/env python3
# selftests/e2e/test_retry.py — request retries (docs/retries.md): 503 then 200, idempotency and the route opt-in,
# streamed bodies, a backend killed under load, the retry budget under an outage, backoff against the request
# deadline, the timeout condition, and never a retry once response bytes went to the client.
import os
import re
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Backend, Clawd, Client, Tap, check, eq, free_port, get, metrics_sample,  # noqa: E402
                     metrics_scrape,
                     simple_config, wait_for)

t = Tap()


class Scripted(Backend):
    """
    A backend whose answer to its n-th request (1-based, all connections) is
    script(n, req), one of:
      ("status", code[, delay_s])   a complete response with that status (after the delay)
      ("reset",)                    RST without a byte of response
      ("partial_reset", total, n)   a 200 head announcing `total` body bytes, n of them, then RST
    Records the monotonic arrival time of every request in .arrivals.
    """

    def __init__(self, script, **kw):
        self.script = script
        self.n = 0
        self.arrivals = []
        super().__init__(**kw)

    def _respond(self, c, req, mode):
        with self.lock:
            self.n += 1
            n = self.n
            self.arrivals.append(time.monotonic())
        act = self.script(n, req)
        if act[0] == "status":
            if len(act) > 2 and self.release.wait(act[2]):
                return False
            body = b"%d from %s\n" % (act[1], self.name.encode())
            c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                      % (act[1], len(body), self.name.encode(), body))
            return True
        if act[0] == "reset":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if act[0] == "partial_reset":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % act[1] + b"x" * act[2])
            time.sleep(0.1)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        raise AssertionError("unknown action %r" % (act,))


def config(*backends, retry=None, routes=None, timeouts=None, workers=1):
    cfg = simple_config(*backends)
    cfg["workers"] = workers
    cfg["admin"] = {"address": "127.0.0.1:%d" % free_port()}
    if retry is not None:
        cfg["upstreams"][0]["retry"] = retry
    if routes is not None:
        cfg["routes"] = routes
    if timeouts is not None:
        cfg["timeouts"] = timeouts
    return cfg


scrape = metrics_scrape
sample = metrics_sample


def retries(cd, reason, pool="pool"):
    return sample(scrape(cd), "openclaw_upstream_retries_total", upstream=pool, reason=reason)


def refused(cd, why, pool="pool"):
    return sample(scrape(cd), "openclaw_upstream_retries_refused_total", upstream=pool, why=why)


def log_entries(cd, n, timeout=3.0):
    return cd.wait_log(n, timeout)


def fail_first_time(always=()):
    """503 the first time a target is seen (and every time for targets containing a word of always)."""
    seen = set()

    def script(n, req):
        if any(w in req.target for w in always) or req.target not in seen:
            seen.add(req.target)
            return ("status", 503)
        return ("status", 200)
    return script


@t.test("a 503 then a 200: the client sees 200, one retry is counted and logged")
def _():
    be = Scripted(lambda n, req: ("status", 503 if n == 1 else 200))
    with be, Clawd(config(be, retry={"attempts": 2, "on": ["reset", 503]})) as cd:
        eq(retries(cd, "503"), 0, "no retry before")
        r = get(cd.port, "/one")
        eq(r.status, 200, "client status")
        eq(be.n, 2, "backend saw the request twice")
        eq(retries(cd, "503"), 1, "openclaw_upstream_retries_total{reason=503}")
        eq(retries(cd, "reset"), 0, "nothing else counted")
        e = log_entries(cd, 1)[0]
        eq(e["status"], 200, "logged status")
        eq(e.get("retries"), 1, "retries field of the access log")
        # A request that needed no retry carries no field.
        eq(get(cd.port, "/two").status, 200)
        e = log_entries(cd, 2)[1]
        check("retries" not in e, "no retries field on a first-try success: %r" % e)


@t.test("a reset before any response byte is retried by default (GET), not for POST")
def _():
    be = Scripted(lambda n, req: ("reset",) if n in (1, 3) else ("status", 200))
    cfg = config(be)
    cfg["upstreams"][0]["keepalive"] = 0  # fresh connections: not the pooled-connection replay
    with be, Clawd(cfg) as cd:
        eq(get(cd.port, "/r1").status, 200, "GET after a reset")
        eq(be.n, 2, "backend saw the GET twice")
        eq(retries(cd, "reset"), 1, "retries{reason=reset}")
        eq(get(cd.port, "/r2", method="POST", body=b"x").status, 502, "POST after a reset")
        eq(be.n, 3, "backend saw the POST once")
        eq(refused(cd, "non_idempotent"), 1, "refused{why=non_idempotent}")


@t.test("POST is not retried on 503 unless the route opts in; a streamed body never is")
def _():
    be = Scripted(fail_first_time(always=("always",)))
    routes = [
        {"name": "optin", "match": {"path_prefix": "/optin/"}, "upstream": "pool",
         "retry_non_idempotent": True},
        {"name": "plain", "upstream": "pool"},
    ]
    with be, Clawd(config(be, retry={"attempts": 1, "on": [503]}, routes=routes)) as cd:
        r = get(cd.port, "/plain/fail-once", method="POST", body=b"hello")
        eq(r.status, 503, "POST on a plain route: the backend's 503")
        eq(be.n, 1, "backend saw the POST once")
        eq(refused(cd, "non_idempotent"), 1, "refused{why=non_idempotent}")
        eq(retries(cd, "503"), 0, "no retry counted")
        # PUT is idempotent: retried on the same route.
        r = get(cd.port, "/plain/fail-once-put", method="PUT", body=b"put")
        eq(r.status, 200, "PUT retried")
        eq(be.n, 3, "backend saw the PUT twice")
        # The opt-in route retries a POST, with the whole body both times.
        r = get(cd.port, "/optin/fail-once", method="POST", body=b"hello world")
        eq(r.status, 200, "POST on the opt-in route")
        eq(be.n, 5, "backend saw the POST twice")
        eq([s.body for s in be.seen[-2:]], [b"hello world", b"hello world"], "body replayed whole")
        eq(retries(cd, "503"), 2, "two retries counted")
        # A body larger than clawd's buffer is streamed: it cannot be sent again.
        big = b"b" * (256 << 10)
        r = get(cd.port, "/optin/always", method="POST", body=big, timeout=10)
        eq(r.status, 503, "streamed POST: the backend's 503")
        eq(be.n, 6, "backend saw the streamed POST once")
        eq(be.seen[-1].body_len, len(big), "the backend got the whole body")
        eq(refused(cd, "streamed_body"), 1, "refused{why=streamed_body}")


@t.test("one of two backends killed under 2000 keep-alive GETs: no GET fails")
def _():
    # 5ms per answer: requests are in flight on b when it dies (the reset path, not only connect failures).
    a = Scripted(lambda n, req: ("status", 200, 0.005), name="a")
    b = Scripted(lambda n, req: ("status", 200, 0.005), name="b")
    # The defaults: connect failures and resets are retried, once.
    with a, b, Clawd(config(a, b, workers=2)) as cd:
        nthreads, per = 4, 500
        failures, done = [], [0]
        lock = threading.Lock()
        killed = threading.Event()

        def loop(k):
            c = None
            for i in range(per):
                try:
                    if c is None:
                        c = Client(cd.port, timeout=10)
                    c.send(b"GET /k%d/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (k, i))
                    r = c.response()
                    if r.status != 200:
                        with lock:
                            failures.append((k, i, r.status, r.body[:80]))
                    if r.header("connection", "").lower() == "close":
                        c.close()
                        c = None
                except Exception as e:  # noqa: B902 — every failure is the test's business
                    with lock:
                        failures.append((k, i, type(e).__name__, str(e)))
                    if c:
                        c.close()
                    c = None
                with lock:
                    done[0] += 1
                    if done[0] == nthreads * per // 4 and not killed.is_set():
                        killed.set()
                        b.close()  # listener and every connection gone mid-run
            if c:
                c.close()

        th = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(nthreads)]
        t0 = time.monotonic()
        for x in th:
            x.start()
        for x in th:
            x.join(120)
        check(not any(x.is_alive() for x in th), "client threads finished")
        elapsed = time.monotonic() - t0
        eq(done[0], nthreads * per, "requests made")
        check(killed.is_set(), "backend b was killed mid-run")
        eq(failures[:5], [], "failed GETs (%d)" % len(failures))
        text = scrape(cd)
        cf = sample(text, "openclaw_upstream_retries_total", upstream="pool", reason="connect_failure")
        rs = sample(text, "openclaw_upstream_retries_total", upstream="pool", reason="reset")
        print("# 2000 GETs in %.2fs, a served %d, b served %d; retries: connect_failure %d, reset %d"
              % (elapsed, a.n, b.n, cf, rs))
        check(cf + rs > 0, "the kill was survived by retries")
        check(a.n + b.n >= nthreads * per, "every GET reached a backend")


@t.test("every server answers 503: the budget caps amplification, refusals counted")
def _():
    a = Scripted(lambda n, req: ("status", 503), name="a")
    b = Scripted(lambda n, req: ("status", 503), name="b")
    retry = {"attempts": 2, "on": [503], "backoff": {"base": "1ms", "max": "2ms"},
             "budget": {"ratio": 0.2, "min_per_second": 3}}
    with a, b, Clawd(config(a, b, retry=retry)) as cd:
        n, nthreads = 240, 6
        statuses = []
        lock = threading.Lock()

        def loop(k):
            with Client(cd.port, timeout=10) as c:
                for i in range(n // nthreads):
                    c.send(b"GET /burst/%d/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (k, i))
                    r = c.response()
                    with lock:
                        statuses.append(r.status)

        t0 = time.monotonic()
        th = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(nthreads)]
        for x in th:
            x.start()
        for x in th:
            x.join(60)
        secs = time.monotonic() - t0
        eq(len(statuses), n, "responses")
        eq(set(statuses), {503}, "every client saw the backends' 503")
        upstream = a.n + b.n
        # ratio × requests, plus the per-second floor for every second the burst touched (one worker).
        allowance = n * 0.2 + 3 * (int(secs) + 2)
        print("# %d requests in %.2fs -> %d upstream requests (cap %.0f; %d without a budget)"
              % (n, secs, upstream, n + allowance, n * 3))
        check(upstream <= n + allowance, "upstream requests %d <= %d" % (upstream, n + allowance))
        check(upstream > n, "some retries happened")
        text = scrape(cd)
        got = sample(text, "openclaw_upstream_retries_total", upstream="pool", reason="503")
        ref = sample(text, "openclaw_upstream_retries_refused_total", upstream="pool", why="budget")
        eq(got, upstream - n, "retries counted = extra upstream requests")
        check(ref > 0, "refused{why=budget} > 0 (got %r)" % ref)


@t.test("backoff: retries wait a jittered pause, and none starts past the request deadline")
def _():
    be = Scripted(lambda n, req: ("status", 503))
    retry = {"attempts": 1, "on": [503], "backoff": {"base": "100ms", "max": "100ms"},
             "budget": {"ratio": 1, "min_per_second": 1000}}
    with be, Clawd(config(be, retry=retry)) as cd:
        took = []
        for i in range(20):
            t0 = time.monotonic()
            eq(get(cd.port, "/b%d" % i).status, 503)
            took.append(time.monotonic() - t0)
        eq(be.n, 40, "each request tried twice")
        gaps = [be.arrivals[2 * i + 1] - be.arrivals[2 * i] for i in range(20)]
        print("# pause before the retry: mean %.1fms, max %.1fms" % (
            1000 * sum(gaps) / len(gaps), 1000 * max(gaps)))
        check(min(took) >= 0, "a retried request takes >= 0")
        check(max(gaps) < 0.1 + 0.4, "no pause much over base (%.3fs)" % max(gaps))
        # Uniform in [0, 100ms]: the mean of 20 pauses is far from 0.
        check(sum(gaps) / len(gaps) > 0.015, "the pauses are real (mean %.3fs)" % (sum(gaps) / len(gaps)))

    # A slow 503 (200ms) under a 300ms request deadline with up to 400ms of backoff.
    be = Scripted(lambda n, req: ("status", 503, 0.2))
    retry = {"attempts": 2, "on": [503], "backoff": {"base": "400ms", "max": "400ms"},
             "budget": {"ratio": 1, "min_per_second": 1000}}
    routes = [{"name": "default", "upstream": "pool", "timeouts": {"request": "300ms"}}]
    with be, Clawd(config(be, retry=retry, routes=routes)) as cd:
        for i in range(10):
            before = len(be.arrivals)
            t0 = time.monotonic()
            r = get(cd.port, "/d%d" % i)
            took = time.monotonic() - t0
            check(r.status in (503, 504), "status %d" % r.status)
            # The deadline is checked on the worker's 100ms tick: 300ms + 100ms + a margin.
            check(took < 0.3 + 0.1 + 0.5, "answered within the deadline (+margin): %.3fs" % took)
            for at in be.arrivals[before:]:
                check(at - t0 < 0.3 + 0.05, "an attempt started %.3fs after the request" % (at - t0))
        print("# 10 requests: %d attempts, refused{why=deadline} %d"
              % (be.n, refused(cd, "deadline")))
        check(refused(cd, "deadline") >= 1, "deadline refusals counted")
        check(be.n <= 20, "at most one retry fits the deadline each time")


@t.test("timeout is a condition: a backend too slow once is retried when `timeout` is on")
def _():
    be = Scripted(lambda n, req: ("status", 200, 1.5 if n == 1 else 0))
    timeouts = {"upstream_response": "300ms"}
    with be, Clawd(config(be, retry={"on": ["timeout"]}, timeouts=timeouts)) as cd:
        t0 = time.monotonic()
        r = get(cd.port, "/slow-once")
        eq(r.status, 200, "the retry answered")
        check(time.monotonic() - t0 < 1.2, "did not wait for the slow attempt")
        eq(retries(cd, "timeout"), 1, "retries{reason=timeout}")
    # Without it (the default) the slow attempt is a 504.
    be = Scripted(lambda n, req: ("status", 200, 1.5 if n == 1 else 0))
    with be, Clawd(config(be, timeouts=timeouts)) as cd:
        eq(get(cd.port, "/slow-once").status, 504, "no timeout retry by default")
        eq(retries(cd, "timeout"), 0)


@t.test("never retried after response bytes were forwarded: truncated, one backend request")
def _():
    be = Scripted(lambda n, req: ("partial_reset", 100000, 1000))
    retry = {"attempts": 3, "on": ["connect_failure", "reset", "timeout", 502, 503, 504]}
    with be, Clawd(config(be, retry=retry)) as cd:
        with Client(cd.port) as c:
            c.send(b"GET /partial HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            c.sock.settimeout(5)
            try:
                while True:
                    d = c.sock.recv(65536)
                    if not d:
                        break
                    got += d
            except (ConnectionResetError, socket.timeout):
                pass
        head, _, body = got.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 200"), "the 200 head reached the client: %r" % head[:40])
        check(len(body) < 100000, "truncated body (%d bytes)" % len(body))
        time.sleep(0.5)
        eq(be.n, 1, "backend saw exactly one request")
        eq(retries(cd, "reset"), 0, "no retry counted")


t.main()
