# selftests/e2e/test_smuggling.py — ambiguous or malformed requests are refused by clawd and never reach a backend.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Backend, Clawd, Client, Closed, Tap, check, eq, simple_config  # noqa: E402

t = Tap()

LIMITS = {"request_line": 512, "header_size": 2048, "header_count": 20}

H = b"Host: a.test\r\n"

# (name, request bytes, acceptable statuses)
CASES = [
    ("Content-Length and Transfer-Encoding together",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", {400}),
    ("two different Content-Length headers",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", {400}),
    ("Content-Length list with different values",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 5\r\n\r\nabcde", {400}),
    ("Content-Length +5", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nabcde", {400}),
    ("Content-Length '5 5'", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5 5\r\n\r\nabcde", {400}),
    ("Content-Length 0x5", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nabcde", {400}),
    ("Content-Length -1", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", {400}),
    ("Content-Length beyond 64 bits",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n", {400, 413}),
    ("Transfer-Encoding: chunked, gzip",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", {400}),
    ("Transfer-Encoding: gzip",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", {501}),
    ("Transfer-Encoding: identity, chunked",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
     {400, 501}),
    ("Transfer-Encoding: chunked twice",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n0\r\n\r\n", {400}),
    ("Transfer-Encoding: xchunked",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", {400, 501}),
    ("Transfer-Encoding on HTTP/1.0",
     b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("obs-fold header continuation",
     b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n\r\n", {400}),
    ("space before the colon",
     b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", {400}),
    ("NUL in a header value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", {400}),
    ("bare LF line endings", b"GET / HTTP/1.1\n" + b"Host: a.test\n\n", {400}),
    ("bare LF inside the head", b"GET / HTTP/1.1\r\nHost: a.test\nX-A: b\r\n\r\n", {400}),
    ("bare CR inside a header line", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", {400}),
    ("chunk size 'zz'",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", {400}),
    ("chunk size overflow",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"1ffffffffffffffff\r\nabc\r\n0\r\n\r\n", {400}),
    ("chunk data without CRLF",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n", {400}),
    ("missing Host on HTTP/1.1", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", {400}),
    ("two Host headers", b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", {400}),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\n" + H + b"\r\n", {505}),
    ("lower-case http version", b"GET / http/1.1\r\n" + H + b"\r\n", {400}),
    ("over-long request line",
     b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n" + H + b"\r\n", {414}),
    ("too many header fields",
     b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-H%d: v\r\n" % i for i in range(30)) + b"\r\n",
     {431}),
    ("head larger than header_size",
     b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 3000 + b"\r\n\r\n", {431}),
    ("dot-segment path /a/../b", b"GET /a/../b HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("encoded dot-segment /a/%2e%2e/b", b"GET /a/%2e%2e/b HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("encoded dot-segment /a/%2E%2e", b"GET /a/%2E%2e HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("Expect other than 100-continue",
     b"POST / HTTP/1.1\r\n" + H + b"Expect: something\r\nContent-Length: 1\r\n\r\nx", {417}),
]


def read_status(c):
    try:
        return c.response(timeout=5).status
    except Closed:
        return None


def rejected(name, data, want):
    def run():
        with Backend() as be, Clawd(simple_config(be, limits=LIMITS)) as cd:
            with Client(cd.port) as c:
                c.send(data)
                st = read_status(c)
                check(st in want, "status %r, want one of %s" % (st, sorted(want)))
                check(c.closed(3), "connection still open after a rejected request")
            n = be.counts()
            eq((n["requests"], n["raw_bytes"]), (0, 0),
               "requests / bytes that reached the backend")
            log = cd.wait_log(1)
            eq(log[-1]["status"], st, "status in the access log")
            # The proxy is still healthy afterwards.
            with Client(cd.port) as c:
                c.send(b"GET /ok HTTP/1.1\r\nHost: a.test\r\n\r\n")
                eq(c.response().status, 200, "a well-formed request afterwards")
    return run


for name, data, want in CASES:
    t.test("%s -> %s" % (name, "/".join(str(s) for s in sorted(want))))(
        rejected(name, data, want))


@t.test("smuggled second request after a rejected one is never forwarded")
def _():
    with Backend() as be, Clawd(simple_config(be, limits=LIMITS)) as cd, Client(cd.port) as c:
        c.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n"
               b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(read_status(c), 400, "status")
        check(c.closed(3), "connection still open")
        eq(be.counts()["requests"], 0, "requests at the backend")


@t.test("Content-Length over max_body: 413, backend never sees it")
def _():
    with Backend() as be:
        cfg = simple_config(be, limits=LIMITS)
        cfg["routes"][0]["max_body"] = "1k"
        with Clawd(cfg) as cd:
            with Client(cd.port) as c:
                c.send(b"POST /big HTTP/1.1\r\n" + H + b"Content-Length: 5000\r\n\r\n")
                eq(read_status(c), 413, "status")
                try:
                    c.send(b"x" * 5000)
                except OSError:
                    pass
                check(c.closed(4), "connection still open after 413")
            eq(be.counts()["raw_bytes"], 0, "bytes at the backend")
            # Exactly at the limit passes.
            with Client(cd.port) as c:
                c.send(b"POST /fits HTTP/1.1\r\n" + H + b"Content-Length: 1024\r\n\r\n" + b"y" * 1024)
                r = c.response()
                eq(r.status, 200, "a body of exactly max_body")
                eq(r.json()["body_len"], 1024, "body length at the backend")


@t.test("chunked body over max_body: 413 or close, backend never gets a complete request")
def _():
    with Backend() as be:
        cfg = simple_config(be, limits=LIMITS)
        cfg["routes"][0]["max_body"] = "1k"
        with Clawd(cfg) as cd:
            with Client(cd.port) as c:
                c.send(b"POST /big HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
                st = None
                try:
                    for _ in range(10):
                        c.send(b"200\r\n" + b"z" * 512 + b"\r\n")
                    c.send(b"0\r\n\r\n")
                except OSError:
                    pass
                try:
                    st = c.response(timeout=5).status
                except (Closed, OSError):
                    st = None
                check(st in (413, None), "status %r, want 413 or a closed connection" % st)
                check(c.closed(4), "connection still open")
            eq(be.counts()["complete"], 0, "complete requests at the backend")


t.main()
