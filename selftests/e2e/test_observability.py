# selftests/e2e/test_observability.py — /metrics (promtool-valid, exact counts), /healthz and /readyz, bearer token,
# request id and traceparent end to end, access log formats, SIGUSR1 reopen, secrets kept out, clawctl stats and top.
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (Backend, Clawd, Client, Skip, Tap, check, eq, free_port, get,  # noqa: E402
                     hall, wait_for)

t = Tap()
CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(harness.ROOT, "build", "clawctl")
PROMTOOL = shutil.which("promtool")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def config(be, admin=True, **kw):
    cfg = {
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [{"name": "pool", "servers": [be.addr]}],
        "routes": [{"name": "api", "match": {"path_prefix": "/api/"}, "upstream": "pool"}],
    }
    if admin:
        cfg["admin"] = {"address": "127.0.0.1:%d" % free_port()}
    cfg.update(kw)
    return cfg


def admin_port(cd):
    return int(cd.config["admin"]["address"].rsplit(":", 1)[1])


def admin_get(cd, path, token=None, method="GET"):
    """Returns (status, headers dict lower-cased, body bytes) from the admin listener."""
    s = socket.create_connection(("127.0.0.1", admin_port(cd)), timeout=5)
    try:
        req = "%s %s HTTP/1.1\r\nHost: admin\r\n" % (method, path)
        if token is not None:
            req += "Authorization: Bearer %s\r\n" % token
        s.sendall((req + "\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def scrape(cd, token=None):
    st, h, body = admin_get(cd, "/metrics", token)
    eq(st, 200, "/metrics status")
    check(h.get("content-type", "").startswith("text/plain; version=0.0.4"),
          "content type %r" % h.get("content-type"))
    return body.decode()


def sample(text, name, **labels):
    """The value of one series, 0 when absent (counters not yet observed are left out)."""
    for ln in text.splitlines():
        if ln.startswith("#") or not ln.startswith(name):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", ln)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(4))
    return 0.0


def promtool_check(text):
    if not PROMTOOL:
        return
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    check(p.returncode == 0, "promtool check metrics failed (%d):\n%s%s" % (
        p.returncode, p.stdout.decode(), p.stderr.decode()))


@t.test("/metrics passes promtool, and 100 requests raise the counters by exactly 100")
def _():
    if not PROMTOOL:
        raise Skip("promtool not installed (Debian package prometheus)")
    with Backend() as be, Clawd(config(be, workers=2)) as cd:
        before = scrape(cd)
        promtool_check(before)
        for i in range(100):
            r = get(cd.port, "/api/n%d" % i)
            eq(r.status, 200, "request %d" % i)
        for i in range(7):
            eq(get(cd.port, "/nowhere").status, 404, "unrouted")
        after = scrape(cd)
        promtool_check(after)
        lbl = dict(listener="web", route="api", method="GET", code_class="2xx")
        eq(sample(after, "openclaw_requests_total", **lbl) - sample(before, "openclaw_requests_total", **lbl),
           100, "requests_total{route=api,2xx} delta")
        nolbl = dict(listener="web", route="", method="GET", code_class="4xx")
        eq(sample(after, "openclaw_requests_total", **nolbl), 7, "requests_total{route=\"\",4xx}")
        eq(sample(after, "openclaw_proxy_errors_total", reason="no_route"), 7, "no_route errors")
        eq(sample(after, "openclaw_request_duration_seconds_count", route="api"), 100, "histogram count")
        eq(sample(after, "openclaw_request_duration_seconds_bucket", route="api", le="+Inf"), 100,
           "+Inf bucket")
        eq(sample(after, "openclaw_upstream_response_seconds_count", upstream="pool", server=be.addr), 100,
           "upstream histogram count")
        eq(sample(after, "openclaw_accepted_connections_total")
           - sample(before, "openclaw_accepted_connections_total"), 107, "accepted connections delta")
        check(sample(after, "openclaw_sent_bytes_total", listener="web") > 100 * 100, "sent bytes")
        eq(sample(after, "openclaw_ready"), 1, "ready gauge")


@t.test("/healthz, /readyz, 404 for other paths, 405 for other methods")
def _():
    with Backend() as be, Clawd(config(be)) as cd:
        eq(admin_get(cd, "/healthz")[0], 200, "healthz")
        st, _, body = admin_get(cd, "/readyz")
        eq((st, body), (200, b"ready\n"), "readyz")
        eq(admin_get(cd, "/nope")[0], 404, "unknown path")
        eq(admin_get(cd, "/metrics", method="POST")[0], 405, "POST /metrics")


@t.test("/readyz answers 503 while clawd drains, and /healthz stays 200")
def _():
    with Backend() as be, Clawd(config(be, drain_timeout="5s")) as cd:
        c = Client(cd.port, timeout=10)
        c.send(b"GET /api/slow?sleep_ms=1500 HTTP/1.1\r\nHost: a\r\n\r\n")
        wait_for(lambda: be.requests >= 1, 3, what="backend got the slow request")
        cd.signal(signal.SIGTERM)
        st = wait_for(lambda: (lambda s: s if s == 503 else None)(admin_get(cd, "/readyz")[0]), 2,
                      what="readyz 503 during drain")
        eq(st, 503, "readyz while draining")
        eq(admin_get(cd, "/healthz")[0], 200, "healthz while draining")
        eq(c.response().status, 200, "the in-flight request still completes")
        c.close()
        eq(cd.wait_exit(8), 0, "clawd exit status")
        cd.stopped = True


@t.test("admin bearer token: required when configured, a loose token file is refused")
def _():
    with Backend() as be:
        d = harness.make_tmpdir("clawd-token-")
        try:
            tok = os.path.join(d, "admin.token")
            with open(tok, "w") as f:
                f.write("s3cr3t-token\n")
            os.chmod(tok, 0o600)
            cfg = config(be)
            cfg["admin"]["bearer_token_file"] = tok
            with Clawd(cfg) as cd:
                st, h, _ = admin_get(cd, "/metrics")
                eq(st, 401, "no token")
                check(h.get("www-authenticate", "").startswith("Bearer"), "WWW-Authenticate %r" % h)
                eq(admin_get(cd, "/metrics", token="wrong")[0], 401, "wrong token")
                eq(admin_get(cd, "/readyz", token="s3cr3t-token")[0], 200, "right token")
                promtool_check(scrape(cd, token="s3cr3t-token"))
            os.chmod(tok, 0o644)
            cd = Clawd(cfg, wait_listen=False)
            try:
                cd.start()
                rc = cd.wait_exit(5)
                eq(rc, 1, "exit status with a 0644 token file")
                check("0644 is too open" in cd.stderr(), "stderr says why: %r" % cd.stderr())
            finally:
                cd.kill()
                cd._teardown()
        finally:
            harness.remove_tmpdir(d)


@t.test("request id and traceparent reach the backend and the log; a trace starts when absent")
def _():
    with Backend() as be, Clawd(config(be, trusted_proxies=["127.0.0.1/32"])) as cd:
        # Propagation: same trace id, a new span of the proxy's, flags kept; tracestate passes.
        r = get(cd.port, "/api/a", headers=[("traceparent", "00-%s-%s-01" % (TRACE, PARENT)),
                                            ("tracestate", "vendor=x"), ("X-Request-ID", "req-42")])
        hd = [tuple(p) for p in r.json()["headers"]]
        tp = hall(hd, "traceparent")
        eq(len(tp), 1, "one traceparent upstream")
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", tp[0])
        check(m, "traceparent %r" % tp[0])
        eq(m.group(1), TRACE, "trace id kept")
        check(m.group(2) != PARENT, "the proxy made its own span id")
        eq(hall(hd, "tracestate"), ["vendor=x"], "tracestate passed on")
        eq(hall(hd, "X-Request-ID"), ["req-42"], "trusted request id kept")
        (e,) = cd.wait_log(1)
        eq((e["trace_id"], e["span_id"], e["parent_span_id"], e["request_id"]),
           (TRACE, m.group(2), PARENT, "req-42"), "log carries the ids")
        # Start: no traceparent -> a new trace, not sampled by default.
        r = get(cd.port, "/api/b")
        hd = [tuple(p) for p in r.json()["headers"]]
        m2 = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-00", hall(hd, "traceparent")[0])
        check(m2 and m2.group(1) != "0" * 32, "started trace %r" % hall(hd, "traceparent"))
        rid = hall(hd, "X-Request-ID")[0]
        check(re.fullmatch(r"[0-9a-f]{32}", rid), "generated request id %r" % rid)
        e2 = cd.wait_log(2)[1]
        eq((e2["trace_id"], e2["span_id"], e2["request_id"]), (m2.group(1), m2.group(2), rid),
           "log of the started trace")
        check("parent_span_id" not in e2, "no parent span for a started trace")
        # Invalid: restarted, and its tracestate dropped.
        r = get(cd.port, "/api/c", headers=[("traceparent", "00-%s-%s-01" % ("0" * 32, PARENT)),
                                            ("tracestate", "vendor=y")])
        hd = [tuple(p) for p in r.json()["headers"]]
        check(TRACE not in hall(hd, "traceparent")[0] and "0" * 32 not in hall(hd, "traceparent")[0],
              "invalid traceparent replaced: %r" % hall(hd, "traceparent"))
        eq(hall(hd, "tracestate"), [], "tracestate of an invalid traceparent dropped")


@t.test("request id trust: never, and a custom header name; traceparent can be switched off per route")
def _():
    with Backend() as be:
        cfg = config(be, trusted_proxies=["127.0.0.1/32"],
                     tracing={"request_id": {"trust": "never", "header": "X-Correlation-ID"}})
        cfg["routes"].insert(0, {"name": "quiet", "match": {"path_prefix": "/api/quiet"},
                                 "upstream": "pool", "tracing": {"traceparent": {"enabled": False},
                                                                 "request_id": {"trust": "always"}}})
        with Clawd(cfg) as cd:
            r = get(cd.port, "/api/x", headers=[("X-Correlation-ID", "mine")])
            hd = [tuple(p) for p in r.json()["headers"]]
            ids = hall(hd, "X-Correlation-ID")
            eq(len(ids), 1, "one id header")
            check(ids[0] != "mine", "trust: never replaced the client's id")
            r = get(cd.port, "/api/quiet", headers=[("X-Correlation-ID", "mine"),
                                                    ("traceparent", "00-%s-%s-01" % (TRACE, PARENT))])
            hd = [tuple(p) for p in r.json()["headers"]]
            eq(hall(hd, "X-Correlation-ID"), ["mine"], "route trust: always kept it")
            eq(hall(hd, "traceparent"), ["00-%s-%s-01" % (TRACE, PARENT)], "traceparent off: passed untouched")
            e = cd.wait_log(2)[1]
            check("trace_id" not in e, "no trace ids logged with tracing off: %r" % e)


@t.test("secrets stay out of the access log: Authorization, Cookie and the query string")
def _():
    with Backend() as be:
        for fmt in ("json", "combined"):
            d = harness.make_tmpdir("clawd-secrets-")
            try:
                path = os.path.join(d, "a.log")
                cfg = config(be, admin=False, access_log={"path": path, "format": fmt})
                with Clawd(cfg) as cd:
                    r = get(cd.port, "/api/s?api_key=QUERYSECRET",
                            headers=[("Authorization", "Bearer AUTHSECRET"), ("Cookie", "sid=COOKIESECRET"),
                                     ("Referer", "https://x.test/?t=REFSECRET")])
                    eq(r.status, 200, "status")
                    wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 3, what="log line")
                with open(path) as f:
                    text = f.read()
                check("/api/s" in text, "the line is there (%s): %r" % (fmt, text))
                for s in ("AUTHSECRET", "COOKIESECRET", "QUERYSECRET", "REFSECRET"):
                    check(s not in text, "%s leaked into the %s log: %r" % (s, fmt, text))
            finally:
                harness.remove_tmpdir(d)


@t.test("combined and template formats; a template asking for a credential header is refused")
def _():
    with Backend() as be:
        d = harness.make_tmpdir("clawd-fmt-")
        try:
            path = os.path.join(d, "a.log")
            cfg = config(be, admin=False, access_log={
                "path": path, "format": "template",
                "template": "$remote_addr|$request_method|$uri|$status|$request_id|$trace_id|$http_user_agent"})
            with Clawd(cfg) as cd:
                r = get(cd.port, "/api/t", headers=[("User-Agent", "obs-test/1")])
                rid = hall([tuple(p) for p in r.json()["headers"]], "X-Request-ID")[0]
                wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 3, what="log line")
            with open(path) as f:
                line = f.read().rstrip("\n")
            parts = line.split("|")
            eq(parts[:5], ["127.0.0.1", "GET", "/api/t", "200", rid], "template fields")
            check(re.fullmatch(r"[0-9a-f]{32}", parts[5]), "trace id %r" % parts[5])
            eq(parts[6], "obs-test/1", "header variable")

            cfg = config(be, admin=False, access_log={"path": path, "format": "template",
                                                      "template": "$http_authorization"})
            rc, out, err = harness.run_clawd(["--check", "-c", write_cfg(d, cfg)])
            eq(rc, 1, "clawd --check exit status")
            check("access_log.template" in err and "sensitive_headers" in err, "reason: %r" % err)
        finally:
            harness.remove_tmpdir(d)


def write_cfg(d, cfg):
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        f.write(harness.to_yaml(cfg) + "\n")
    return p


@t.test("SIGUSR1 reopens the access log: rename, signal, keep sending; no line is lost")
def _():
    with Backend() as be, Clawd(config(be, admin=False, workers=2)) as cd:
        total = 400
        sent = [0]
        errors = []

        def load():
            try:
                for i in range(total):
                    eq(get(cd.port, "/api/r%d" % i).status, 200, "request %d" % i)
                    sent[0] += 1
            except BaseException as e:  # noqa: B902
                errors.append(e)

        th = threading.Thread(target=load)
        th.start()
        wait_for(lambda: sent[0] >= total // 4, 10, what="a quarter of the requests")
        os.rename(cd.access_log, cd.access_log + ".1")
        cd.signal(signal.SIGUSR1)
        th.join(60)
        check(not th.is_alive(), "load finished")
        check(not errors, "load errors: %r" % errors)

        def count():
            n = 0
            for p in (cd.access_log + ".1", cd.access_log):
                if os.path.exists(p):
                    with open(p) as f:
                        n += sum(1 for ln in f if ln.strip())
            return n

        wait_for(lambda: count() >= total, 5, what="%d lines across both files" % total)
        eq(count(), total, "lines across both files")
        with open(cd.access_log) as f:
            check(sum(1 for _ in f) > 0, "the new file got the later lines")
        paths = set()
        for p in (cd.access_log + ".1", cd.access_log):
            with open(p) as f:
                paths |= {json.loads(ln)["path"] for ln in f if ln.strip()}
        eq(len(paths), total, "each request logged exactly once")
        check("reopened" in cd.stderr(), "reopen logged")


def clawctl(*args, timeout=10):
    p = subprocess.run([CLAWCTL] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


@t.test("clawctl stats --json and the table; clawctl status shows admin and guard")
def _():
    with Backend() as be, Clawd(config(be)) as cd:
        sock = os.path.join(cd.dir, "ctl.sock")
        for i in range(5):
            get(cd.port, "/api/s%d" % i)
        get(cd.port, "/nowhere")
        rc, out, err = clawctl("--socket", sock, "stats", "--json")
        eq(rc, 0, "stats --json exit (%s)" % err)
        j = json.loads(out)
        eq(j["classes"]["2xx"], 5, "2xx")
        eq(j["classes"]["4xx"], 1, "4xx")
        api = [r for r in j["routes"] if r["name"] == "api"][0]
        eq(api["requests"], 5, "route requests")
        eq(sum(api["buckets"]), 5, "route histogram")
        eq(j["errors"]["no_route"], 1, "no_route")
        rc, out, err = clawctl("--socket", sock, "stats")
        eq(rc, 0, "stats exit (%s)" % err)
        check(re.search(r"^requests\s+6 ", out, re.M), "requests line: %r" % out)
        check(re.search(r"^api\s+5\s+0\s", out, re.M), "route row: %r" % out)
        rc, out, err = clawctl("--socket", sock, "status")
        eq(rc, 0, "status exit")
        check(re.search(r"^admin\s+127\.0\.0\.1:%d" % admin_port(cd), out, re.M), "admin line: %r" % out)
        check(re.search(r"^guard\s+off", out, re.M), "guard line: %r" % out)
        rc, out, err = clawctl("--socket", sock, "stats", "--bogus")
        eq(rc, 2, "bad argument exit")
        rc, out, err = clawctl("--socket", sock, "top", "--interval", "5")
        eq(rc, 2, "bad interval exit")


@t.test("clawctl top in tmux: renders routes and rates, quits on q")
def _():
    tmux = shutil.which("tmux")
    if not tmux:
        raise Skip("tmux not installed")
    with Backend() as be, Clawd(config(be)) as cd:
        sock = os.path.join(cd.dir, "ctl.sock")
        srv = "clawtop-%d" % os.getpid()
        base = [tmux, "-L", srv]
        subprocess.run(base + ["new-session", "-d", "-x", "120", "-y", "40", "-s", "top",
                               "%s --socket %s top --interval 200ms; echo TOP-EXITED-$?; sleep 30"
                               % (CLAWCTL, sock)], check=True, timeout=10)
        try:
            stop = threading.Event()

            def load():
                while not stop.is_set():
                    get(cd.port, "/api/top")

            th = threading.Thread(target=load)
            th.start()
            try:
                def screen():
                    return subprocess.run(base + ["capture-pane", "-p", "-t", "top"], capture_output=True,
                                          timeout=5).stdout.decode()

                shot = wait_for(lambda: (lambda s: s if re.search(r"^api\s+\d+\.\d", s, re.M) and "req/s" in s
                                         else None)(screen()), 8, what="top to render a rate for route api")
                check("BACKEND" in shot and be.addr in shot, "backend row: %r" % shot)
            finally:
                stop.set()
                th.join(10)
            subprocess.run(base + ["send-keys", "-t", "top", "q"], check=True, timeout=5)
            shot = wait_for(lambda: (lambda s: s if "TOP-EXITED-" in s else None)(screen()), 5,
                            what="top to exit on q")
            check("TOP-EXITED-0" in shot, "top exit status: %r" % shot)
        finally:
            subprocess.run(base + ["kill-server"], capture_output=True, timeout=10)


def reload_ok(cd):
    rc, out, err = clawctl("--socket", os.path.join(cd.dir, "ctl.sock"), "reload")
    check(rc == 0 and "reloaded" in out, "clawctl reload: rc %d: %s%s" % (rc, out, err))


def series(text, name):
    """{frozenset(labels): value} of every sample of name."""
    out = {}
    for ln in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", ln)
        if m and m.group(1) == name:
            out[frozenset(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))] = float(m.group(4))
    return out


@t.test("reload adding a route: /metrics counts it under its own label at once, old series stay monotonic")
def _():
    with Backend() as be:
        cfg = config(be, workers=2)
        cfg["upstreams"].append({"name": "extra", "servers": [be.addr]})
        with Clawd(cfg) as cd:
            for i in range(30):
                eq(get(cd.port, "/api/a%d" % i).status, 200, "api before")
            for i in range(4):
                eq(get(cd.port, "/v2/x%d" % i).status, 404, "v2 before the reload")
            before = scrape(cd)
            promtool_check(before)
            api = dict(listener="web", route="api", method="GET", code_class="2xx")
            none = dict(listener="web", route="", method="GET", code_class="4xx")
            eq(sample(before, "openclaw_requests_total", **api), 30, "api before")
            eq(sample(before, "openclaw_requests_total", **none), 4, "no route before")
            # The new route goes first (indexes shift: api is route 1 now) and to another pool.
            cfg["routes"] = [{"name": "v2", "match": {"path_prefix": "/v2/"}, "upstream": "extra"}] + cfg["routes"]
            cfg["listeners"].append({"name": "alt", "address": "127.0.0.1:%d" % free_port()})
            cd.rewrite(cfg)
            reload_ok(cd)
            alt = int(cfg["listeners"][1]["address"].rsplit(":", 1)[1])
            for i in range(25):
                eq(get(cd.port, "/v2/y%d" % i).status, 200, "v2 after the reload")
            for i in range(5):
                eq(get(cd.port, "/api/b%d" % i).status, 200, "api after")
            for i in range(3):
                eq(get(alt, "/v2/z%d" % i).status, 200, "v2 on the new listener")
            after = scrape(cd)
            promtool_check(after)
            v2 = dict(listener="web", route="v2", method="GET", code_class="2xx")
            eq(sample(after, "openclaw_requests_total", **v2), 25, "v2 under its own label")
            eq(sample(after, "openclaw_requests_total", listener="alt", route="v2", method="GET",
                      code_class="2xx"), 3, "v2 on listener alt")
            eq(sample(after, "openclaw_requests_total", **api), 35, "api: 30 before + 5 after")
            eq(sample(after, "openclaw_requests_total", **none), 4, "no route unchanged")
            eq(sample(after, "openclaw_request_duration_seconds_count", route="v2"), 28, "v2 histogram")
            eq(sample(after, "openclaw_request_duration_seconds_count", route="api"), 35, "api histogram")
            eq(sample(after, "openclaw_upstream_response_seconds_count", upstream="extra", server=be.addr), 28,
               "pool extra histogram")
            eq(sample(after, "openclaw_upstream_responses_total", upstream="pool", server=be.addr,
                      code_class="2xx"), 35, "pool responses")
            check(sample(after, "openclaw_received_bytes_total", listener="alt") > 0, "alt bytes")
            # Monotonic: no series of the first scrape went down.
            for name in ("openclaw_requests_total", "openclaw_request_duration_seconds_count",
                         "openclaw_upstream_responses_total", "openclaw_received_bytes_total"):
                b, a = series(before, name), series(after, name)
                for k, v in b.items():
                    check(k in a and a[k] >= v, "%s%s went from %s to %s" % (name, dict(k), v, a.get(k)))
            _, out, _ = clawctl("--socket", os.path.join(cd.dir, "ctl.sock"), "stats", "--json")
            routes = {r["name"]: r["requests"] for r in json.loads(out)["routes"]}
            eq(routes.get("v2"), 28, "clawctl stats: v2")
            eq(routes.get("api"), 35, "clawctl stats: api")
            # Removing api: its series stop being exported; added back, it carries on from 35.
            saved = cfg["routes"]
            cfg["routes"] = saved[:1]
            cd.rewrite(cfg)
            reload_ok(cd)
            mid = scrape(cd)
            promtool_check(mid)
            check('route="api"' not in mid, "a removed route is no longer exported")
            eq(sample(mid, "openclaw_requests_total", **v2), 25, "v2 kept")
            cfg["routes"] = saved
            cd.rewrite(cfg)
            reload_ok(cd)
            eq(get(cd.port, "/api/c").status, 200, "api back")
            last = scrape(cd)
            promtool_check(last)
            eq(sample(last, "openclaw_requests_total", **api), 36, "api resumes from its count")


@t.test("clawctl status: splice state, key store counts, config file and load time (table and --json)")
def _():
    with Backend() as be:
        st_dir = harness.make_tmpdir("clawd-obs-state-")
        cfg = config(be, workers=1)
        cfg["state_dir"] = st_dir
        cfg["tiers"] = [{"name": "free", "rate": "100/s", "burst": 100}]
        cfg["routes"][0]["auth"] = {"type": "api_key"}
        cfg["splice"] = {"enabled": "off"}
        with Clawd(cfg) as cd:
            sock = os.path.join(cd.dir, "ctl.sock")
            t0 = int(time.time())
            ids = []
            for i in range(4):
                rc, out, err = clawctl("--socket", sock, "--json", "keys", "create", "--name", "k%d" % i,
                                       "--tier", "free")
                eq(rc, 0, "keys create: %s" % err)
                ids.append(json.loads(out)["id"])
            rc, out, err = clawctl("--socket", sock, "keys", "revoke", ids[0])
            eq(rc, 0, "keys revoke: %s%s" % (out, err))
            rc, out, err = clawctl("--socket", sock, "--json", "status")
            eq(rc, 0, "status --json: %s" % err)
            j = json.loads(out)
            eq(j["config"], cd.path, "config path")
            check(abs(j["config_loaded_unix"] - t0) <= 30, "config_loaded_unix %r near %d" % (j["config_loaded_unix"], t0))
            check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", j["config_loaded"]), "config_loaded %r" % j["config_loaded"])
            eq(j["keys"]["store"], os.path.join(st_dir, "keys.db"), "key store path")
            eq((j["keys"]["active"], j["keys"]["revoked"], j["keys"]["expired"]), (3, 1, 0), "key counts")
            eq(j["splice"]["enabled"], "off", "splice mode")
            eq(j["splice"]["loaded"], False, "splice program not loaded")
            eq(j["splice"]["attached"], False, "splice program not attached")
            eq((j["splice"]["active"], j["splice"]["fallbacks"]), (0, 0), "splice counts")
            check(j["splice"].get("reason"), "a reason when not loaded")
            rc, out, err = clawctl("--socket", sock, "status")
            eq(rc, 0, "status: %s" % err)
            check(re.search(r"^config\s+%s \(loaded %s" % (re.escape(cd.path), j["config_loaded"]), out, re.M),
                  "config line: %r" % out)
            check(re.search(r"^keys\s+%s: 3 active, 1 revoked, 0 expired$" % re.escape(j["keys"]["store"]),
                            out, re.M), "keys line: %r" % out)
            check(re.search(r"^splice\s+off, program not loaded .*0 active, 0 spliced, 0 fallbacks$", out, re.M),
                  "splice line: %r" % out)
            # A reload moves the load time and keeps the counts.
            time.sleep(1.1)
            cd.rewrite(cfg)
            reload_ok(cd)
            j2 = json.loads(clawctl("--socket", sock, "--json", "status")[1])
            check(j2["config_loaded_unix"] > j["config_loaded_unix"], "load time moved on reload: %r -> %r"
                  % (j["config_loaded_unix"], j2["config_loaded_unix"]))
            eq(j2["keys"]["active"], 3, "keys after reload")
    with Backend() as be, Clawd(config(be)) as cd:
        j = json.loads(clawctl("--socket", os.path.join(cd.dir, "ctl.sock"), "--json", "status")[1])
        eq(j["keys"]["store"], None, "no key store without api_key routes or tiers")
        eq(j["splice"]["enabled"], "auto", "splice default")
        eq(j["splice"]["loaded"], False, "no splice route: not loaded")
        out = clawctl("--socket", os.path.join(cd.dir, "ctl.sock"), "status")[1]
        check(re.search(r"^keys\s+off$", out, re.M), "keys off line: %r" % out)
        check(re.search(r"^splice\s+auto, program not loaded \(no route uses splice or tcp mode\)", out, re.M),
              "splice line: %r" % out)


@t.test("the Grafana dashboard uses only metrics that docs/metrics.md lists")
def _():
    with open(os.path.join(harness.ROOT, "examples", "grafana", "openclaw.json")) as f:
        dash = json.load(f)
    with open(os.path.join(harness.ROOT, "docs", "metrics.md")) as f:
        doc = f.read()
    used = set()
    for p in dash["panels"]:
        for tg in p.get("targets", []):
            used |= set(re.findall(r"\b(openclaw_[a-z0-9_]+?)(?:_bucket|_sum|_count)?\b(?=[{\[])", tg["expr"]))
    check(len(used) >= 15, "metrics found in the dashboard: %r" % sorted(used))
    missing = sorted(m for m in used if "`%s`" % m not in doc)
    eq(missing, [], "dashboard metrics absent from docs/metrics.md")


t.main()
