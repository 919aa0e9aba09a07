# selftests/e2e/test_routing.py — route selection by listener, host, path, method and headers; 404; direct responses.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Backend, Clawd, Client, Tap, check, eq, free_port, get  # noqa: E402

t = Tap()


def routed_config(backends, routes, listeners=None):
    """One upstream per backend (named after it), the given routes."""
    return {
        "listeners": listeners or [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [{"name": b.name, "servers": [b.addr]} for b in backends],
        "routes": routes,
    }


def who(port, path="/", host="h.test", headers=(), method="GET"):
    r = get(port, path, host=host, headers=headers, method=method)
    eq(r.status, 200, "status for %s %s (host %s)" % (method, path, host))
    return r.json()["backend"]


@t.test("host: exact (case and :port ignored), *.suffix, no match falls through")
def _():
    with Backend(name="A") as a, Backend(name="B") as b, Backend(name="C") as c:
        cfg = routed_config([a, b, c], [
            {"name": "exact", "match": {"host": "exact.test"}, "upstream": "A"},
            {"name": "wild", "match": {"host": ["*.wild.test", "other.test"]}, "upstream": "B"},
            {"name": "rest", "upstream": "C"},
        ])
        with Clawd(cfg) as cd:
            eq(who(cd.port, host="exact.test"), "A", "exact host")
            eq(who(cd.port, host="EXACT.Test:8080"), "A", "exact host, other case, with port")
            eq(who(cd.port, host="x.exact.test"), "C", "subdomain of an exact host")
            eq(who(cd.port, host="a.wild.test"), "B", "wildcard host")
            eq(who(cd.port, host="deep.a.wild.test:81"), "B", "deeper wildcard host with port")
            eq(who(cd.port, host="wild.test"), "C", "bare suffix does not match *.suffix")
            eq(who(cd.port, host="other.test"), "B", "second entry of a host list")
            # Absolute-form target: its authority is the host.
            r = get(cd.port, "http://exact.test/abs", host="exact.test")
            eq(r.json()["backend"], "A", "absolute-form target")


@t.test("path: exact, prefix and regex; the query does not count")
def _():
    with Backend(name="A") as a, Backend(name="B") as b, Backend(name="C") as c, \
            Backend(name="D") as d:
        cfg = routed_config([a, b, c, d], [
            {"name": "exact", "match": {"path": "/exact"}, "upstream": "A"},
            {"name": "prefix", "match": {"path_prefix": "/pre/"}, "upstream": "B"},
            {"name": "regex", "match": {"path_regex": "^/v[0-9]+/items$"}, "upstream": "C"},
            {"name": "rest", "upstream": "D"},
        ])
        with Clawd(cfg) as cd:
            eq(who(cd.port, "/exact"), "A", "/exact")
            eq(who(cd.port, "/exact?q=1"), "A", "/exact?q=1")
            eq(who(cd.port, "/exact/"), "D", "/exact/ is not /exact")
            eq(who(cd.port, "/exactly"), "D", "/exactly")
            eq(who(cd.port, "/pre/x/y"), "B", "/pre/x/y")
            eq(who(cd.port, "/pre/"), "B", "/pre/")
            eq(who(cd.port, "/pre"), "D", "/pre lacks the prefix's slash")
            eq(who(cd.port, "/v12/items"), "C", "/v12/items")
            eq(who(cd.port, "/v1/items?page=2"), "C", "/v1/items?page=2")
            eq(who(cd.port, "/v1/items/3"), "D", "regex is anchored by its author")
            eq(who(cd.port, "/vx/items"), "D", "/vx/items")
            eq([x["route"] for x in cd.wait_log(11)],
               ["exact", "exact", "rest", "rest", "prefix", "prefix", "rest", "regex", "regex",
                "rest", "rest"], "routes in the access log")


@t.test("method and header conditions (presence, exact value, case-insensitive name)")
def _():
    with Backend(name="A") as a, Backend(name="B") as b, Backend(name="C") as c, \
            Backend(name="D") as d:
        cfg = routed_config([a, b, c, d], [
            {"name": "writes", "match": {"path": "/m", "methods": ["POST", "PUT"]}, "upstream": "A"},
            {"name": "canary", "match": {"headers": [{"name": "X-Canary"}]}, "upstream": "B"},
            {"name": "prod", "match": {"headers": [{"name": "X-Env", "value": "prod"},
                                                   {"name": "X-Team"}]}, "upstream": "C"},
            {"name": "rest", "upstream": "D"},
        ])
        with Clawd(cfg) as cd:
            eq(who(cd.port, "/m", method="POST"), "A", "POST /m")
            eq(who(cd.port, "/m", method="PUT"), "A", "PUT /m")
            eq(who(cd.port, "/m", method="GET"), "D", "GET /m")
            eq(who(cd.port, "/m", method="DELETE"), "D", "DELETE /m")
            eq(who(cd.port, "/h", headers=[("x-canary", "")]), "B", "header present (empty value)")
            eq(who(cd.port, "/h", headers=[("X-CANARY", "1")]), "B", "header name in capitals")
            eq(who(cd.port, "/h", headers=[("X-Env", "prod"), ("X-Team", "t")]), "C",
               "header value and presence")
            eq(who(cd.port, "/h", headers=[("X-Env", "prod")]), "D", "only one of two headers")
            eq(who(cd.port, "/h", headers=[("X-Env", "production"), ("X-Team", "t")]), "D",
               "wrong header value")
            eq(who(cd.port, "/h", headers=[("X-Env", "PROD"), ("X-Team", "t")]), "D",
               "header values compare exactly")


@t.test("listener: a route bound to one of two listeners")
def _():
    with Backend(name="A") as a, Backend(name="B") as b:
        listeners = [{"name": "web", "address": "127.0.0.1:%d" % free_port()},
                     {"name": "admin", "address": "127.0.0.1:%d" % free_port()}]
        cfg = routed_config([a, b], [
            {"name": "admin-only", "listeners": ["admin"], "upstream": "A"},
            {"name": "rest", "listeners": ["web"], "upstream": "B"},
        ], listeners=listeners)
        with Clawd(cfg) as cd:
            web, admin = cd.listen_ports
            eq(who(admin, "/x"), "A", "request on the admin listener")
            eq(who(web, "/x"), "B", "request on the web listener")


@t.test("first match wins, in file order")
def _():
    with Backend(name="A") as a, Backend(name="B") as b:
        cfg = routed_config([a, b], [
            {"name": "broad", "match": {"path_prefix": "/fm/"}, "upstream": "A"},
            {"name": "narrow", "match": {"path": "/fm/special", "methods": ["GET"]},
             "upstream": "B"},
            {"name": "rest", "upstream": "B"},
        ])
        with Clawd(cfg) as cd:
            eq(who(cd.port, "/fm/special"), "A", "earlier broad route beats a later exact one")
            eq(who(cd.port, "/other"), "B", "fall-through")


@t.test("no route matches: 404 from the proxy, backend never contacted")
def _():
    with Backend(name="A") as a:
        cfg = routed_config([a], [{"name": "only", "match": {"host": "known.test"},
                                   "upstream": "A"}])
        with Clawd(cfg) as cd, Client(cd.port) as c:
            c.send(b"GET /nothing HTTP/1.1\r\nHost: unknown.test\r\n\r\n")
            r = c.response()
            eq(r.status, 404, "status")
            # The connection survives a bodiless 404.
            c.send(b"GET /x HTTP/1.1\r\nHost: known.test\r\n\r\n")
            eq(c.response().json()["backend"], "A", "next request on the connection")
            eq(a.counts()["requests"], 1, "backend requests (only the routed one)")
            log = cd.wait_log(2)
            eq((log[0]["status"], log[0]["route"], log[0]["upstream"]), (404, None, None),
               "404 in the access log")
            # A body that will never be read must not become the next request.
            c.send(b"POST /nothing HTTP/1.1\r\nHost: unknown.test\r\nContent-Length: 40\r\n\r\n")
            r = c.response()
            eq(r.status, 404, "status with an unread body")
            check(c.closed(3), "connection not closed after a 404 with an unread body")
        eq(a.counts()["requests"], 1, "backend requests at the end")


@t.test("respond route: status, body, content type; HEAD gets no body; backend not hit")
def _():
    with Backend(name="A") as a:
        cfg = routed_config([a], [
            {"name": "health", "match": {"path": "/healthz"},
             "respond": {"status": 200, "body": "ok\n"}},
            {"name": "maint", "match": {"path_prefix": "/maint"},
             "respond": {"status": 503, "body": "{\"down\": true}", "content_type": "application/json"}},
            {"name": "rest", "upstream": "A"},
        ])
        with Clawd(cfg) as cd, Client(cd.port) as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: a.test\r\n\r\n")
            r = c.response()
            eq((r.status, r.body), (200, b"ok\n"), "healthz")
            eq(r.header("Content-Type"), "text/plain; charset=utf-8", "default content type")
            eq(r.header("Content-Length"), "3", "Content-Length")
            c.send(b"HEAD /healthz HTTP/1.1\r\nHost: a.test\r\n\r\n")
            r = c.response(head_request=True)
            eq(r.status, 200, "HEAD status")
            eq(r.header("Content-Length"), "3", "HEAD Content-Length")
            c.send(b"GET /maint/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
            r = c.response()  # would read the HEAD's leaked body as a status line otherwise
            eq((r.status, r.body), (503, b'{"down": true}'), "maint")
            eq(r.header("Content-Type"), "application/json", "configured content type")
            check(c.nothing_within(0.2), "bytes after the response: %r" % bytes(c.rd.buf))
        eq(a.counts()["connections"], 0, "backend connections")


t.main()
