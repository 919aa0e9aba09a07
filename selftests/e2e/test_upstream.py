# selftests/e2e/test_upstream.py — backends that misbehave or speak unusual HTTP; clients that leave early; HTTP/1.0.
import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Backend, Clawd, Client, Closed, Tap, check, eq, get, hall,  # noqa: E402
                     simple_config)

t = Tap()


@t.test("backend closes a keep-alive connection after answering: the next request still succeeds")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        for i in range(5):
            c.send(b"GET /k%d?closeafter=1 HTTP/1.1\r\nHost: a.test\r\n\r\n" % i)
            r = c.response()
            eq(r.status, 200, "status of request %d" % i)
            eq(r.json()["target"], "/k%d?closeafter=1" % i, "target of request %d" % i)


@t.test("backend closes the pooled connection while it idles: next request succeeds")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"GET /a?closeafter=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 200, "first")
        time.sleep(0.3)
        c.send(b"GET /b HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 200, "second")
        eq(be.counts()["connections"], 2, "backend connections")


@t.test("interim 103 Early Hints passes to a 1.1 client before the final response")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"GET /h?hints=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response()
        eq([s for s, _ in r.interim], [103], "interim statuses")
        eq(r.status, 200, "final status")
        c.send(b"GET /again HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 200, "next request")


@t.test("response without length (until close) reaches the client, then the connection closes")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        be.raw["eof"] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"e" * 70000
        c.send(b"GET /?raw=eof HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response()
        eq(r.status, 200, "status")
        eq(len(r.body), 70000, "body length")
        check(c.closed(2), "client connection still open after a close-delimited body")


@t.test("malformed backend responses become 502")
def _():
    bad = {
        "two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        "garbage": b"NOT HTTP AT ALL\r\n\r\n",
        "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        "bad-status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        "bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
        "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    }
    with Backend() as be, Clawd(simple_config(be)) as cd:
        be.raw.update(bad)
        for name in bad:
            with Client(cd.port) as c:
                c.send(b"GET /?raw=%s HTTP/1.1\r\nHost: a.test\r\n\r\n" % name.encode())
                try:
                    st = c.response().status
                except Closed:
                    st = None
                eq(st, 502, "status for a %s response" % name)


@t.test("backend response with Content-Length and chunked: 502, or chunked without the Content-Length")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        be.raw["cl-te"] = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
                           b"\r\n3\r\nabc\r\n0\r\n\r\n")
        c.send(b"GET /?raw=cl-te HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response()
        if r.status != 502:
            eq(r.status, 200, "status")
            eq(hall(r.headers, "Content-Length"), [], "Content-Length forwarded next to chunked")
            eq(r.body, b"abc", "body")


@t.test("bad chunked framing from the backend mid-body: client connection closed, not completed")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        be.raw["badchunk"] = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                              0.2, b"zz\r\nworld\r\n0\r\n\r\n"]
        c.send(b"GET /?raw=badchunk HTTP/1.1\r\nHost: a.test\r\n\r\n")
        try:
            r = c.response(timeout=3)
            eq(r.status, 502, "a response with broken framing was completed; status")
        except Closed:
            pass
        be.raw["badchunk2"] = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n")
        with Client(cd.port) as c2:
            c2.send(b"GET /?raw=badchunk2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            try:
                r = c2.response(timeout=3)
                eq(r.status, 502, "a response with broken framing was completed; status")
            except Closed:
                pass


@t.test("HTTP/1.0 client: no keep-alive by default, keep-alive on request")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd:
        with Client(cd.port) as c:
            c.send(b"GET /ten HTTP/1.0\r\nHost: a.test\r\n\r\n")
            r = c.response()
            eq(r.status, 200, "status")
            eq(r.json()["version"], "HTTP/1.0", "version sent upstream")
            check(c.closed(2), "1.0 connection without keep-alive left open")
        with Client(cd.port) as c:
            c.send(b"GET /ka HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
            r = c.response()
            eq((r.header("Connection") or "").lower(), "keep-alive", "Connection header")
            c.send(b"GET /ka2 HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
            eq(c.response().json()["target"], "/ka2", "second request on the 1.0 connection")


@t.test("HTTP/1.0 client, backend answers chunked anyway: intact body, then close")
def _():
    problems = []
    with Backend() as be, Clawd(simple_config(be)) as cd:
        for hdr in (b"", b"Connection: keep-alive\r\n"):
            what = "1.0 request with %r" % hdr
            with Client(cd.port, timeout=3) as c:
                c.send(b"GET /ten?chunked=1 HTTP/1.0\r\nHost: a.test\r\n" + hdr + b"\r\n")
                try:
                    r = c.response(timeout=3)
                except TimeoutError:
                    problems.append("%s: response never ended: the connection stays open after "
                                    "a close-delimited body" % what)
                    continue
                if r.status == 502:
                    continue
                if r.status != 200:
                    problems.append("%s: status %d" % (what, r.status))
                if "chunked" in (r.header("Transfer-Encoding") or ""):
                    problems.append("%s: chunked response to a 1.0 client" % what)
                try:
                    r.json()
                except ValueError:
                    problems.append("%s: body is not the backend's JSON (chunk framing leaked "
                                    "into the body): %r" % (what, r.body[:40]))
    eq(problems, [], "problems")


@t.test("client disconnects mid-response: clawd carries on")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd:
        for _ in range(5):
            c = Client(cd.port)
            c.send(b"GET /big?size=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % (8 << 20))
            c.rd.read_until(b"\r\n\r\n", time.monotonic() + 5)
            c.close()
        r = get(cd.port, "/after")
        eq(r.status, 200, "a request afterwards")
        check(cd.proc.poll() is None, "clawd died")


@t.test("client disconnects while the backend is still thinking: no crash, pool stays sane")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd:
        for _ in range(5):
            c = Client(cd.port)
            c.send(b"GET /s?sleep_ms=200 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            time.sleep(0.05)
            c.close()
        time.sleep(0.4)
        for i in range(3):
            eq(get(cd.port, "/after%d" % i).status, 200, "request %d afterwards" % i)


@t.test("100 concurrent clients each get their own answer")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd:
        errors = []
        results = {}

        def one(i):
            try:
                body = b"%d" % i * 100
                r = get(cd.port, "/c/%d" % i, method="POST", body=body, timeout=10)
                j = r.json()
                results[i] = (r.status, j["target"], j["body_sha256"] == hashlib.sha256(body).hexdigest())
            except Exception as e:
                errors.append("%d: %r" % (i, e))

        ths = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(20)
        eq(errors, [], "client errors")
        bad = {i: v for i, v in results.items() if v != (200, "/c/%d" % i, True)}
        eq(bad, {}, "mismatched answers")


@t.test("a chunked body under max_body in many small chunks is accepted")
def _():
    with Backend() as be:
        cfg = simple_config(be)
        cfg["routes"][0]["max_body"] = "1k"
        with Clawd(cfg) as cd, Client(cd.port) as c:
            data = b"0123456789" * 100  # 1000 bytes of data, 1500 bytes of framing
            wire = b"".join(b"a\r\n" + data[i:i + 10] + b"\r\n" for i in range(0, 1000, 10))
            c.send(b"POST /small-chunks HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + wire + b"0\r\n\r\n")
            try:
                r = c.response()
            except Closed:
                raise AssertionError("connection closed instead of an answer")
            eq(r.status, 200, "status (1000 data bytes against max_body 1k)")
            eq(r.json()["body_len"], 1000, "body length at the backend")


@t.test("percent-encoding and query strings are forwarded verbatim")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd:
        target = "/a%20b/%E2%9C%93/c;p=1?q=%2F&x=y+z&empty="
        r = get(cd.port, target)
        eq(r.json()["target"], target, "target at the backend")


@t.test("Expect: 100-continue on a 404 route: no 100, 404, body never read as a request")
def _():
    with Backend() as be:
        cfg = simple_config(be)
        cfg["routes"][0]["match"] = {"path_prefix": "/known/"}
        with Clawd(cfg) as cd, Client(cd.port) as c:
            c.send(b"PUT /unknown HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 40\r\n\r\n")
            r = c.response()
            eq(r.interim, [], "interim responses")
            eq(r.status, 404, "status")
            try:
                c.send(b"GET /known/x HTTP/1.1\r\nHost: a.test\r\n\r\n" + b"y" * 0)
            except OSError:
                pass
            check(c.closed(3), "connection left open with an unread body")
            eq(be.counts()["requests"], 0, "backend requests")


t.main()
