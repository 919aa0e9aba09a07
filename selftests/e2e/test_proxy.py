# selftests/e2e/test_proxy.py — clawd as a plain HTTP/1.1 reverse proxy: framing, keep-alive, forwarding headers.
import hashlib
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Backend, Clawd, Client, Closed, Tap, check, curl, eq, get, hall, hget,  # noqa: E402
                     make_tmpdir, remove_tmpdir, simple_config, wait_for)

t = Tap()


def backend_headers(resp):
    """The header pairs the backend received, from an echo response."""
    return [tuple(p) for p in resp.json()["headers"]]


@t.test("GET through the proxy reaches the backend and comes back intact")
def _():
    with Backend(name="alpha") as be, Clawd(simple_config(be)) as cd:
        r = get(cd.port, "/hello/world?x=1&y=2", host="www.example.test")
        eq(r.status, 200, "status")
        eq(r.header("X-Backend"), "alpha", "X-Backend response header")
        j = r.json()
        eq(j["method"], "GET", "method at backend")
        eq(j["target"], "/hello/world?x=1&y=2", "target at backend")
        eq(j["version"], "HTTP/1.1", "version at backend")
        eq(hget(backend_headers(r), "Host"), "www.example.test", "Host at backend")
        eq(be.counts()["requests"], 1, "backend requests")


@t.test("keep-alive: 10 requests on one client connection use one backend connection")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        for i in range(10):
            c.send(b"GET /n/%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % i)
            r = c.response()
            eq(r.status, 200, "status of request %d" % i)
            eq(r.json()["target"], "/n/%d" % i, "target of request %d" % i)
            check((r.header("Connection") or "").lower() != "close",
                  "proxy announced close on request %d" % i)
        n = be.counts()
        eq(n["requests"], 10, "requests at backend")
        eq(n["connections"], 1, "backend connections accepted")


@t.test("chunked request body forwarded; chunked response with trailers back intact")
def _():
    body = b"".join(b"%03d-chunk-data;" % i for i in range(40))
    wire = b""
    for i in range(0, len(body), 50):
        part = body[i:i + 50]
        wire += b"%x\r\n%s\r\n" % (len(part), part)
    wire += b"0\r\nX-Trail: end\r\n\r\n"
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"POST /up?chunked=1 HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               + wire)
        r = c.response()
        eq(r.status, 200, "status")
        eq((r.header("Transfer-Encoding") or "").lower(), "chunked", "response Transfer-Encoding")
        check(r.header("Content-Length") is None, "Content-Length next to chunked: %r" % r.headers)
        j = r.json()
        eq(j["body_len"], len(body), "body length at backend")
        eq(j["body_sha256"], hashlib.sha256(body).hexdigest(), "body hash at backend")
        eq([tuple(x) for x in j["trailers"]], [("X-Trail", "end")], "request trailers at backend")
        eq(r.trailers, [("X-Checksum", hashlib.sha256(r.body).hexdigest())], "response trailers")
        # The connection survives a chunked exchange.
        c.send(b"GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().json()["target"], "/after", "next request on the connection")
        eq(be.counts()["connections"], 1, "backend connections")


@t.test("POST with Content-Length: body arrives byte for byte")
def _():
    body = os.urandom(200000)
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body))
        c.send(body)
        r = c.response()
        eq(r.status, 200, "status")
        j = r.json()
        eq(j["body_len"], len(body), "body length")
        eq(j["body_sha256"], hashlib.sha256(body).hexdigest(), "body hash")
        eq(hget(backend_headers(r), "Content-Length"), str(len(body)), "Content-Length at backend")


@t.test("Expect: 100-continue with curl: body delivered, Expect not forwarded")
def _():
    d = make_tmpdir()
    try:
        path = os.path.join(d, "body.bin")
        data = os.urandom(300000)
        with open(path, "wb") as f:
            f.write(data)
        with Backend() as be, Clawd(simple_config(be)) as cd:
            rc, out, err = curl(["-v", "-H", "Expect: 100-continue", "--expect100-timeout", "10",
                                 "--data-binary", "@" + path,
                                 "http://127.0.0.1:%d/upload" % cd.port])
            eq(rc, 0, "curl exit status (stderr: %s)" % err[-500:])
            check("HTTP/1.1 100 Continue" in err, "curl saw no 100 Continue:\n" + err[-1500:])
            j = json.loads(out)
            eq(j["body_len"], len(data), "body length at backend")
            eq(j["body_sha256"], hashlib.sha256(data).hexdigest(), "body hash at backend")
            check(not hall([tuple(p) for p in j["headers"]], "Expect"),
                  "backend saw Expect: %r" % j["headers"])
    finally:
        remove_tmpdir(d)


# clawd streams request bodies (docs/http.md, "Expect: 100-continue"): once its own
# 100 is out, the head goes upstream without waiting for the first body byte, as
# Envoy does and nginx with proxy_request_buffering off. The old form of this test
# asserted the opposite right after reading the 100 and so raced clawd's worker.
@t.test("Expect: 100-continue over a raw socket: clawd answers 100 itself, forwards the head "
        "without Expect before any body byte, then streams the body")
def _():
    body = b"x" * 5000
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"PUT /e HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body))
        st, hdrs = c.read_interim(timeout=3)
        eq(st, 100, "interim status before the body")
        # Not a sleep: the head must arrive while the client still holds the whole body.
        wait_for(lambda: be.counts()["requests"] == 1, timeout=10,
                 what="the request head at the backend before any body byte was sent")
        eq(be.counts()["complete"], 0, "backend read a whole request before the body was sent")
        seen = be.seen[0]
        eq(hall(seen.headers, "Expect"), [], "Expect forwarded to the backend")
        eq(hget(seen.headers, "Content-Length"), str(len(body)), "Content-Length at the backend")
        c.send(body)
        r = c.response()
        eq(r.status, 200, "final status")
        j = r.json()
        eq(j["body_len"], len(body), "body length")
        check(not hall(backend_headers(r), "Expect"), "backend saw Expect: %r" % j["headers"])
        # Still usable afterwards.
        c.send(b"GET /again HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 200, "next request")


@t.test("HEAD, 204 and 304 responses are bodiless and the connection stays usable")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"HEAD /h?size=1234 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response(head_request=True)
        eq(r.status, 200, "HEAD status")
        eq(r.header("Content-Length"), "1234", "HEAD keeps the Content-Length")
        c.send(b"GET /n?status=204 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 204, "204 status")
        c.send(b"GET /n?status=304 HTTP/1.1\r\nHost: a.test\r\nIf-None-Match: \"x\"\r\n\r\n")
        eq(c.response().status, 304, "304 status")
        c.send(b"GET /last HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response()
        eq(r.status, 200, "status after the bodiless ones")
        # No stray body byte slipped in front of this response.
        eq(r.json()["target"], "/last", "target of the last request")
        eq(be.counts()["connections"], 1, "backend connections")
        check(c.nothing_within(0.2), "extra bytes after the last response: %r" % bytes(c.rd.buf))


@t.test("hop-by-hop headers are removed before the backend")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd:
        r = get(cd.port, "/hop", headers=[
            ("Connection", "keep-alive, X-Foo"), ("X-Foo", "secret"), ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"), ("Upgrade", "websocket"), ("Proxy-Authorization", "Basic eDp5"),
            ("Proxy-Connection", "keep-alive"), ("X-Keep", "yes")])
        eq(r.status, 200, "status")
        h = backend_headers(r)
        for name in ("X-Foo", "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization",
                     "Proxy-Connection"):
            check(not hall(h, name), "%s reached the backend: %r" % (name, h))
        for v in hall(h, "Connection"):
            check("x-foo" not in v.lower(), "Connection still names X-Foo: %r" % v)
        eq(hget(h, "X-Keep"), "yes", "end-to-end header kept")


@t.test("X-Forwarded-For/-Proto/-Host and Forwarded are set")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd:
        r = get(cd.port, "/fw", host="shop.example.test:8443")
        h = backend_headers(r)
        eq(hall(h, "X-Forwarded-For"), ["127.0.0.1"], "X-Forwarded-For")
        eq(hall(h, "X-Forwarded-Proto"), ["http"], "X-Forwarded-Proto")
        eq(hall(h, "X-Forwarded-Host"), ["shop.example.test:8443"], "X-Forwarded-Host")
        fwd = hall(h, "Forwarded")
        eq(len(fwd), 1, "one Forwarded header (%r)" % fwd)
        f = fwd[0].lower().replace('"', "")
        for part in ("for=127.0.0.1", "proto=http", "host=shop.example.test:8443"):
            check(part in f, "Forwarded %r lacks %s" % (fwd[0], part))


@t.test("untrusted client's X-Forwarded-For and Forwarded are replaced")
def _():
    with Backend() as be, Clawd(simple_config(be, trusted_proxies=["10.9.9.9"])) as cd:
        r = get(cd.port, "/u", headers=[("X-Forwarded-For", "1.2.3.4"),
                                        ("Forwarded", "for=1.2.3.4"),
                                        ("X-Forwarded-Proto", "https"),
                                        ("X-Forwarded-Host", "evil.test")])
        h = backend_headers(r)
        eq(hall(h, "X-Forwarded-For"), ["127.0.0.1"], "X-Forwarded-For")
        eq(hall(h, "X-Forwarded-Proto"), ["http"], "X-Forwarded-Proto")
        eq(hall(h, "X-Forwarded-Host"), ["example.test"], "X-Forwarded-Host")
        fwd = " ".join(hall(h, "Forwarded"))
        check("1.2.3.4" not in fwd, "spoofed Forwarded kept: %r" % fwd)


@t.test("trusted proxy's X-Forwarded-For and Forwarded are appended to")
def _():
    with Backend() as be, Clawd(simple_config(be, trusted_proxies=["127.0.0.1"])) as cd:
        r = get(cd.port, "/t", headers=[("X-Forwarded-For", "1.2.3.4"),
                                        ("Forwarded", "for=1.2.3.4")])
        h = backend_headers(r)
        eq(hall(h, "X-Forwarded-For"), ["1.2.3.4, 127.0.0.1"], "X-Forwarded-For")
        fwd = ", ".join(hall(h, "Forwarded")).replace('"', "")
        check("for=1.2.3.4" in fwd and "for=127.0.0.1" in fwd and
              fwd.index("1.2.3.4") < fwd.index("127.0.0.1"),
              "Forwarded not extended in order: %r" % fwd)


@t.test("Host is preserved by default and rewritten with host_rewrite")
def _():
    with Backend() as be:
        cfg = simple_config(be)
        cfg["routes"] = [
            {"name": "rw", "match": {"path_prefix": "/rw/"}, "upstream": "pool",
             "host_rewrite": "internal.example"},
            {"name": "default", "upstream": "pool"},
        ]
        with Clawd(cfg) as cd:
            h = backend_headers(get(cd.port, "/keep", host="Public.Example.test"))
            eq(hall(h, "Host"), ["Public.Example.test"], "Host preserved")
            h = backend_headers(get(cd.port, "/rw/x", host="public.example.test"))
            eq(hall(h, "Host"), ["internal.example"], "Host rewritten")
            eq(hget(h, "X-Forwarded-Host"), "public.example.test", "X-Forwarded-Host keeps the original")


@t.test("pipelined requests in one send are answered in order")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n"
               b"POST /two HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc"
               b"GET /three HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r1, r2, r3 = c.response(), c.response(), c.response()
        eq([r1.status, r2.status, r3.status], [200, 200, 200], "statuses")
        eq([r.json()["target"] for r in (r1, r2, r3)], ["/one", "/two", "/three"], "order")
        eq(r2.json()["body_len"], 3, "body of the pipelined POST")


@t.test("request id: X-Request-ID at the backend equals the access log's request_id and the response's")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd:
        r = get(cd.port, "/rid", headers=[("X-Request-ID", "client-chosen-id")])
        ids = hall(backend_headers(r), "X-Request-ID")
        eq(len(ids), 1, "one X-Request-ID at the backend (%r)" % ids)
        check(ids[0] and ids[0] != "client-chosen-id",
              "an untrusted client's X-Request-ID was kept: %r" % ids)
        log = cd.wait_log(1)
        eq(log[-1]["request_id"], ids[0], "request_id in the access log")
        eq(r.header("X-Request-ID"), ids[0], "the same id on the response to the client")
    with Backend() as be, Clawd(simple_config(be, trusted_proxies=["127.0.0.0/8"])) as cd:
        r = get(cd.port, "/rid", headers=[("X-Request-ID", "trace-42.a_b")])
        eq(hall(backend_headers(r), "X-Request-ID"), ["trace-42.a_b"], "trusted peer's id kept")
        eq(cd.wait_log(1)[-1]["request_id"], "trace-42.a_b", "request_id in the access log")


@t.test("client's Connection: close is honoured: answer, then close")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"GET /bye HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        r = c.response()
        eq(r.status, 200, "status")
        eq((r.header("Connection") or "").lower(), "close", "Connection header")
        check(c.closed(2), "connection left open")


@t.test("pipelined good then malformed request: first answered, then 400 and close")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"GET /good HTTP/1.1\r\nHost: a.test\r\n\r\n"
               b"GET /bad HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
        r1 = c.response()
        eq((r1.status, r1.json()["target"]), (200, "/good"), "first")
        eq(c.response().status, 400, "second")
        check(c.closed(2), "connection left open")
        eq(be.counts()["requests"], 1, "requests at the backend")


@t.test("upstream keepalive 0: a fresh backend connection per request, Connection: close upstream")
def _():
    with Backend() as be:
        cfg = simple_config(be)
        cfg["upstreams"][0]["keepalive"] = 0
        with Clawd(cfg) as cd, Client(cd.port) as c:
            for i in range(3):
                c.send(b"GET /k HTTP/1.1\r\nHost: a.test\r\n\r\n")
                r = c.response()
                eq(r.status, 200, "status")
                eq(hget(backend_headers(r), "Connection"), "close", "Connection at the backend")
            eq(be.counts()["connections"], 3, "backend connections")


@t.test("several workers: keep-alive and concurrent clients still correct")
def _():
    with Backend() as be, Clawd(simple_config(be, workers=4)) as cd:
        errs = []

        def one(i):
            try:
                with Client(cd.port) as c:
                    for k in range(5):
                        c.send(b"GET /w/%d/%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % (i, k))
                        r = c.response()
                        if r.json()["target"] != "/w/%d/%d" % (i, k):
                            errs.append("wrong answer %r" % r.json()["target"])
            except Exception as e:
                errs.append(repr(e))

        ths = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(20)
        eq(errs, [], "errors")
        eq(be.counts()["requests"], 200, "requests at the backend")


@t.test("malformed request after a completed keep-alive exchange still gets its 400")
def _():
    with Backend() as be, Clawd(simple_config(be)) as cd, Client(cd.port) as c:
        c.send(b"GET /good HTTP/1.1\r\nHost: a.test\r\n\r\n")
        eq(c.response().status, 200, "first")
        c.send(b"GET /a/../b HTTP/1.1\r\nHost: a.test\r\n\r\n")
        try:
            st = c.response().status
        except Closed:
            st = None
        eq(st, 400, "status of the second, malformed request")
        check(c.closed(2), "connection left open")


t.main()
