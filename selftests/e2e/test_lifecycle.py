# selftests/e2e/test_lifecycle.py — config checking, start-up refusal, graceful stop, and load balancing across backends.
import collections
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Backend, Clawd, Client, Closed, Tap, check, eq, free_port, get,  # noqa: E402
                     make_tmpdir, remove_tmpdir, run_clawd, simple_config, wait_for)

t = Tap()

GOOD = """\
workers: 1
access_log: "off"
control:
  socket: "off"
listeners:
  - name: web
    address: 127.0.0.1:%d
upstreams:
  - name: pool
    servers:
      - 127.0.0.1:9
routes:
  - name: default
    upstream: pool
"""


def write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


@t.test("--check on a good config exits 0")
def _():
    d = make_tmpdir()
    try:
        p = write(d, "good.yaml", GOOD % free_port())
        rc, out, err = run_clawd(["--check", "-c", p])
        eq(rc, 0, "exit status (stderr: %s)" % err.strip())
        check("ok" in out, "no confirmation on stdout: %r" % out)
        ex = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "quickstart.yaml")
        if os.path.exists(ex):
            rc, out, err = run_clawd(["--check", "-c", ex])
            eq(rc, 0, "examples/quickstart.yaml (stderr: %s)" % err.strip())
    finally:
        remove_tmpdir(d)


@t.test("--check on bad configs exits 1 naming file:line: key")
def _():
    d = make_tmpdir()
    try:
        port = free_port()
        cases = [
            # (name, text, line, key)
            ("unknown top-level key", GOOD % port + "bogus_key: 1\n", 15, "bogus_key"),
            ("bad duration", GOOD % port + "timeouts:\n  connect: 5 parsecs\n", 16,
             "timeouts.connect"),
            ("bad route duration",
             (GOOD % port).replace("    upstream: pool\n",
                                   "    upstream: pool\n    timeouts:\n      idle: soon\n"),
             16, "routes[0].timeouts.idle"),
            ("unknown key in a listener",
             (GOOD % port).replace("    address:", "    colour: blue\n    address:"), 7,
             "listeners[0].colour"),
            ("unknown upstream in a route",
             (GOOD % port).replace("    upstream: pool", "    upstream: nowhere"), 14,
             "routes[0].upstream"),
        ]
        for name, text, line, key in cases:
            p = write(d, "bad.yaml", text)
            rc, out, err = run_clawd(["--check", "-c", p])
            eq(rc, 1, "%s: exit status" % name)
            want = "%s:%d: %s" % (p, line, key)
            check(want in err, "%s: stderr %r lacks %r" % (name, err.strip(), want))
    finally:
        remove_tmpdir(d)


@t.test("clawd refuses to start on a bad config")
def _():
    d = make_tmpdir()
    try:
        port = free_port()
        p = write(d, "bad.yaml", GOOD % port + "bogus_key: 1\n")
        t0 = time.monotonic()
        rc, out, err = run_clawd(["-c", p], timeout=5)
        eq(rc, 1, "exit status")
        check(time.monotonic() - t0 < 2, "took too long to refuse")
        check("bogus_key" in err, "stderr does not name the key: %r" % err)
        s = socket.socket()
        try:
            eq(s.connect_ex(("127.0.0.1", port)), 111, "connect to the configured port")
        finally:
            s.close()
    finally:
        remove_tmpdir(d)


@t.test("graceful stop: in-flight request completes, new connections refused, exit 0")
def _():
    with Backend() as be:
        cfg = simple_config(be, drain_timeout="5s")
        with Clawd(cfg) as cd:
            c = Client(cd.port, timeout=10)
            result = {}

            def run():
                try:
                    c.send(b"GET /slow?sleep_ms=1500 HTTP/1.1\r\nHost: a.test\r\n\r\n")
                    result["r"] = c.response(timeout=10)
                    result["closed"] = c.closed(2)
                except Exception as e:
                    result["e"] = e

            th = threading.Thread(target=run)
            th.start()
            wait_for(lambda: be.counts()["requests"] == 1, 3, what="request at the backend")
            t0 = time.monotonic()
            cd.signal(signal.SIGTERM)
            cd.stopped = True
            # Once clawd has taken the signal (it logs it) and a worker tick has passed,
            # the listener is closed: new connections are refused or closed unserved.
            wait_for(lambda: "stopping" in cd.stderr(), 2, what="clawd to log the stop")
            time.sleep(0.25)
            refused = False
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and not refused:
                s = socket.socket()
                s.settimeout(0.5)
                try:
                    s.connect(("127.0.0.1", cd.port))
                    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
                    s.settimeout(0.5)
                    if s.recv(100) == b"":
                        refused = True  # accepted by the kernel, closed unserved: acceptable too
                except (ConnectionRefusedError, ConnectionResetError):
                    refused = True
                except (socket.timeout, TimeoutError):
                    pass
                finally:
                    s.close()
                time.sleep(0.05)
            check(refused, "a new connection was still served 250ms after SIGTERM was taken")
            th.join(10)
            check("e" not in result, "in-flight request failed: %r" % result.get("e"))
            eq(result["r"].status, 200, "in-flight status")
            check(result["closed"], "client connection not closed after the drained request")
            rc = cd.wait_exit(6)
            took = time.monotonic() - t0
            eq(rc, 0, "exit status")
            check(took < 3.0, "exit took %.2fs (request needed 1.5s, drain 5s)" % took)
            check(be.counts()["requests"] == 1, "the refused requests reached the backend")
            c.close()
            san = cd.sanitizer_report()
            check(not san, "sanitizer: %s" % san)


@t.test("drain time over: clawd closes the unfinished exchange and exits 0")
def _():
    with Backend() as be:
        with Clawd(simple_config(be, drain_timeout="500ms")) as cd, Client(cd.port) as c:
            c.send(b"GET /slow?sleep_ms=5000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            wait_for(lambda: be.counts()["requests"] == 1, 3, what="request at the backend")
            t0 = time.monotonic()
            cd.signal(signal.SIGTERM)
            cd.stopped = True
            rc = cd.wait_exit(5)
            took = time.monotonic() - t0
            eq(rc, 0, "exit status")
            check(took < 0.5 + 1.0, "exit took %.2fs with drain_timeout 500ms" % took)
            try:
                r = c.response(timeout=2)
                check(r.status >= 500, "unfinished exchange answered %d" % r.status)
            except (Closed, OSError):
                pass
            be.release.set()


@t.test("SIGTERM with an idle keep-alive client exits promptly")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 200, "status")
        # The idle connection gets 1 s for a last request (docs/operations.md), not drain_timeout.
        took = cd.stop(timeout=5)
        check(took < 1.0 + 1.5, "stop took %.2fs with only an idle connection" % took)
        check(c.closed(1), "idle client connection not closed")


def can_connect(port):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


@t.test("keep-alive clients sending as a SIGTERM drain starts get a full answer with Connection: close")
def _():
    with Backend() as be, Clawd(simple_config(be, drain_timeout="5s")) as cd:
        req = b"GET /last HTTP/1.1\r\nHost: a.test\r\n\r\n"
        clients = [Client(cd.port) for _ in range(4)]
        try:
            for c in clients:
                c.send(req)
                eq(c.response().status, 200, "first request")
            # All four are idle now. One sends as soon as the drain has begun (the listener
            # refuses), the others within its first half second: each request must be
            # answered, never met by a close.
            cd.signal(signal.SIGTERM)
            cd.stopped = True
            wait_for(lambda: not can_connect(cd.port), 3, interval=0.005,
                     what="the listener to close (the drain to begin)")
            clients[0].send(req)
            for i, c in enumerate(clients[1:]):
                time.sleep(0.15)
                c.send(req)
            for i, c in enumerate(clients):
                r = c.response(timeout=5)
                eq(r.status, 200, "client %d: status of the request sent during the drain" % i)
                eq(len(r.body) > 0, True, "client %d: a whole body" % i)
                eq((r.header("connection") or "").lower(), "close", "client %d: Connection header" % i)
                check(c.closed(2), "client %d: connection not closed after the last answer" % i)
            eq(be.counts()["requests"], 8, "requests at the backend")
            rc = cd.wait_exit(8)
            eq(rc, 0, "exit status")
            san = cd.sanitizer_report()
            check(not san, "sanitizer: %s" % san)
        finally:
            for c in clients:
                c.close()


def lb_config(backends, algorithm, weights=None, **up):
    cfg = simple_config(*backends)
    u = cfg["upstreams"][0]
    u["algorithm"] = algorithm
    if weights:
        u["servers"] = [{"address": b.addr, "weight": w} for b, w in zip(backends, weights)]
    u.update(up)
    return cfg


@t.test("round_robin alternates exactly across three backends")
def _():
    bes = [Backend(name=n) for n in "ABC"]
    try:
        with Clawd(lb_config(bes, "round_robin")) as cd, Client(cd.port) as c:
            seq = []
            for i in range(12):
                c.send(b"GET /rr HTTP/1.1\r\nHost: a.test\r\n\r\n")
                seq.append(c.response().json()["backend"])
            eq(sorted(seq[:3]), ["A", "B", "C"], "first round %r" % seq)
            eq(seq, seq[:3] * 4, "sequence")
    finally:
        for b in bes:
            b.close()


@t.test("weighted_round_robin: 3:1 weights give 30:10 over 40 requests, smoothly")
def _():
    bes = [Backend(name="heavy"), Backend(name="light")]
    try:
        with Clawd(lb_config(bes, "weighted_round_robin", weights=[3, 1])) as cd:
            seq = [get(cd.port, "/w").json()["backend"] for _ in range(40)]
            cnt = collections.Counter(seq)
            eq((cnt["heavy"], cnt["light"]), (30, 10), "split")
            # Smooth WRR never sends more than three in a row to the heavy server.
            run = longest = 0
            for s in seq:
                run = run + 1 if s == "heavy" else 0
                longest = max(longest, run)
            check(longest <= 3, "heavy server got %d in a row: %r" % (longest, seq))
    finally:
        for b in bes:
            b.close()


@t.test("consistent_hash on a header: same value, same backend")
def _():
    bes = [Backend(name=n) for n in "ABC"]
    try:
        cfg = lb_config(bes, "consistent_hash", hash_key="header:X-User")
        with Clawd(cfg) as cd:
            first = {}
            for rnd in range(3):
                for u in range(20):
                    b = get(cd.port, "/c", headers=[("X-User", "user-%d" % u)]).json()["backend"]
                    if rnd == 0:
                        first[u] = b
                    else:
                        eq(b, first[u], "backend for user-%d in round %d" % (u, rnd))
            check(len(set(first.values())) >= 2, "20 users all hashed to one backend: %r" % first)
    finally:
        for b in bes:
            b.close()


t.main()
