#!/usr/bin/env python3
# selftests/e2e/test_health.py — server health end to end: active checks, passive ejection, backups, fast 503, drain, weights, circuit breakers.
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403

CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(harness.ROOT, "build", "clawctl")
HEALTH_PATH = "/healthz"

t = Tap()


def ctl(cd, *args, want_rc=0):
    sock = os.path.join(cd.dir, "ctl.sock")
    p = subprocess.run([CLAWCTL, "--socket", sock] + list(args), capture_output=True, text=True,
                       timeout=30)
    if want_rc is not None and p.returncode != want_rc:
        raise AssertionError("clawctl %s: exit %d, want %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), p.returncode, want_rc, p.stdout, p.stderr))
    return p.returncode, p.stdout, p.stderr


def servers(cd, pool="pool"):
    """{address: server object} from backends.list."""
    r = json.loads(ctl(cd, "--json", "backends", "list", pool)[1])
    eq(len(r["pools"]), 1, "pools in reply")
    return {s["address"]: s for s in r["pools"][0]["servers"]}


def pool_info(cd, pool="pool"):
    return json.loads(ctl(cd, "--json", "backends", "list", pool)[1])["pools"][0]


def state_of(cd, be):
    return servers(cd)[be.addr]["state"]


def traffic(be):
    """Requests a backend saw that were not health checks."""
    with be.lock:
        return sum(1 for r in be.seen if not r.target.startswith(HEALTH_PATH))


def who(r):
    eq(r.status, 200, "status of a proxied GET")
    return r.header("X-Backend")


def cfg(tmp, *backends, **upstream):
    c = simple_config(*backends)
    c["upstreams"][0].update(upstream)
    c["state_dir"] = tmp
    c["timeouts"] = {"connect": "1s", "upstream_response": "5s"}
    return c


def servers_cfg(*entries):
    return [e if isinstance(e, dict) else {"address": e.addr} for e in entries]


FAST_CHECK = {"type": "http", "path": HEALTH_PATH, "interval": "200ms", "jitter": "0%",
              "timeout": "150ms", "rise": 2, "fall": 3}


@t.test("active check: a failing server goes down within interval x fall, comes back within interval x rise")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a, Backend(name="b") as b:
        with Clawd(cfg(tmp, a, b, health=dict(FAST_CHECK))) as cd:
            wait_for(lambda: servers(cd)[b.addr]["check_ok"] is True, 2, what="first check of b")
            b.mode, b.status = "status", 503
            t0 = time.monotonic()
            wait_for(lambda: state_of(cd, b) == "down", 2.0, 0.01, what="b down")
            took = time.monotonic() - t0
            note("down after %.0f ms (interval 200ms x fall 3)" % (took * 1000))
            check(took <= 0.2 * 4 + 0.15, "down took %.3fs, more than interval x (fall+1)" % took)
            s = servers(cd)[b.addr]
            eq(s["check_ok"], False, "last check")
            check("503" in s["check_last"], "check detail names the status: %r" % s["check_last"])
            check(s["check_failures"] >= 3, "failure streak %r" % s["check_failures"])
            check("down (3 failed checks: status 503)" in cd.stderr(), "log line:\n" + cd.stderr())
            n = traffic(b)
            for _ in range(10):
                eq(who(get(cd.port)), "a", "served by the healthy server")
            eq(traffic(b), n, "requests that reached the down server")
            b.mode = "echo"
            t0 = time.monotonic()
            wait_for(lambda: state_of(cd, b) == "up", 2.0, 0.01, what="b up")
            took = time.monotonic() - t0
            note("up after %.0f ms (interval 200ms x rise 2)" % (took * 1000))
            check(took <= 0.2 * 3 + 0.15, "up took %.3fs, more than interval x (rise+1)" % took)
            got = {who(get(cd.port)) for _ in range(6)}
            eq(got, {"a", "b"}, "servers in rotation after recovery")
            eq(cd.stderr().count(": down ("), 1, "down logged once")


@t.test("active check: tcp type, dead server refused, detail says why")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a:
        b = Backend(name="b")
        with Clawd(cfg(tmp, a, b, health={"type": "tcp", "interval": "200ms", "timeout": "150ms",
                                          "fall": 2, "rise": 1})) as cd:
            wait_for(lambda: servers(cd)[b.addr]["check_ok"] is True, 2, what="first check")
            eq(servers(cd)[b.addr]["check_last"], "connected", "tcp check detail")
            b.close()
            wait_for(lambda: state_of(cd, b) == "down", 2.0, 0.01, what="b down")
            check("refused" in servers(cd)[b.addr]["check_last"],
                  "detail: %r" % servers(cd)[b.addr]["check_last"])
            out = ctl(cd, "backends", "list")[1]
            check(b.addr in out and "down" in out and "FAIL" in out, "human table:\n" + out)


@t.test("body_contains and expect: a 200 without the marker fails")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a:
        hc = dict(FAST_CHECK, body_contains="marker-not-there", expect=["200-299"])
        with Clawd(cfg(tmp, a, health=hc)) as cd:
            wait_for(lambda: state_of(cd, a) == "down", 3, what="a down")
            check("lacks" in servers(cd)[a.addr]["check_last"], servers(cd)[a.addr]["check_last"])
        hc = dict(FAST_CHECK, body_contains='"backend": "a"', fall=1)
        with Clawd(cfg(tmp, a, health=hc)) as cd:
            wait_for(lambda: servers(cd)[a.addr]["check_successes"] >= 3, 3, what="passes")
            eq(state_of(cd, a), "up", "state")


@t.test("passive: a burst of 5xx ejects the server; ejections back off; it returns by itself")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a, Backend(name="b", mode="status", status=500) as b:
        out = {"consecutive_failures": 3, "base_ejection": "1s", "max_ejection": "10s",
               "max_ejected_percent": 50}
        with Clawd(cfg(tmp, a, b, outlier=out)) as cd:
            statuses = [get(cd.port).status for _ in range(8)]
            eq(statuses.count(500), 3, "5xx answers before the ejection (%r)" % statuses)
            s = servers(cd)[b.addr]
            eq(s["state"], "ejected", "state")
            eq(s["eject_reason"], "5xx", "reason")
            eq(s["ejections"], 1, "ejections")
            check(0 < s["ejected_left_ms"] <= 1000, "time left %r" % s["ejected_left_ms"])
            eq({who(get(cd.port)) for _ in range(10)}, {"a"}, "served while b is out")
            check("ejected for 1000 ms (3 consecutive 5xx responses; ejection 1)" in cd.stderr(),
                  cd.stderr())
            wait_for(lambda: state_of(cd, b) == "up", 2.0, what="ejection over")
            statuses = [get(cd.port).status for _ in range(8)]
            s = servers(cd)[b.addr]
            eq(s["state"], "ejected", "ejected again")
            eq(s["ejections"], 2, "ejections")
            check(1000 < s["ejected_left_ms"] <= 2000, "second ejection is 2 x base: %r"
                  % s["ejected_left_ms"])


@t.test("passive: max_ejected_percent keeps half of the pool in")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a", mode="status", status=502) as a, \
            Backend(name="b", mode="status", status=502) as b:
        out = {"consecutive_failures": 2, "base_ejection": "30s", "max_ejected_percent": 50}
        with Clawd(cfg(tmp, a, b, outlier=out)) as cd:
            st = [get(cd.port).status for _ in range(20)]
            eq(set(st), {502}, "answers from the failing servers")
            p = pool_info(cd)
            eq(p["ejected"], 1, "servers ejected")
            eq(sorted(s["state"] for s in p["servers"]), ["ejected", "up"], "states")


@t.test("passive: an active-check pass re-admits an ejected server before its timer ends")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a, Backend(name="b") as b:
        out = {"consecutive_failures": 2, "base_ejection": "60s"}
        hc = dict(FAST_CHECK, interval="1s", timeout="200ms")
        with Clawd(cfg(tmp, a, b, outlier=out, health=hc)) as cd:
            # After the first checks, the next ones are about a second away.
            wait_for(lambda: all(s["check_ok"] for s in servers(cd).values()), 2,
                     what="first checks")
            for _ in range(6):
                get(cd.port, "/x?status=503")
            out = [ad for ad, s in servers(cd).items() if s["state"] == "ejected"]
            eq(len(out), 1, "servers ejected after 503s on /x (the share allows one)")
            t0 = time.monotonic()
            wait_for(lambda: servers(cd)[out[0]]["state"] == "up", 1.5, 0.01, what="re-admission")
            note("re-admitted after %.0f ms of a 60 s ejection" % ((time.monotonic() - t0) * 1000))
            check("re-admitted by a passed health check" in cd.stderr(), cd.stderr())


@t.test("slow start: a recovered server's share ramps from 10% to its full weight")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a, Backend(name="b") as b:
        hc = dict(FAST_CHECK, rise=1, fall=1)
        c = cfg(tmp, a, b, algorithm="weighted_round_robin", health=hc, slow_start="3s")
        with Clawd(c) as cd:
            b.mode, b.status = "status", 503
            wait_for(lambda: state_of(cd, b) == "down", 2, what="b down")
            b.mode = "echo"
            wait_for(lambda: state_of(cd, b) == "up", 2, 0.01, what="b up")
            s = servers(cd)[b.addr]
            eq(s["slow_start"], True, "ramping")
            check(0.1 <= s["effective_weight"] < 0.3, "effective weight %r" % s["effective_weight"])
            early = [who(get(cd.port)) for _ in range(40)].count("b")
            wait_for(lambda: not servers(cd)[b.addr]["slow_start"], 5, what="ramp over")
            eq(servers(cd)[b.addr]["effective_weight"], 1.0, "full weight")
            late = [who(get(cd.port)) for _ in range(40)].count("b")
            note("b's share: %d/40 just after recovery, %d/40 after the ramp" % (early, late))
            check(early <= 10, "share right after recovery: %d/40" % early)
            eq(late, 20, "share after the ramp")


@t.test("backup servers take traffic only when every primary is down")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="p1") as p1, Backend(name="p2") as p2, Backend(name="bk") as bk:
        srv = servers_cfg(p1, p2, {"address": bk.addr, "backup": True})
        c = cfg(tmp, p1, health=dict(FAST_CHECK))
        c["upstreams"][0]["servers"] = srv
        with Clawd(c) as cd:
            eq({who(get(cd.port)) for _ in range(10)}, {"p1", "p2"}, "primaries only")
            eq(traffic(bk), 0, "requests on the backup")
            eq(servers(cd)[bk.addr]["backup"], True, "backup flag")
            p1.mode, p1.status = "status", 503
            wait_for(lambda: state_of(cd, p1) == "down", 2, what="p1 down")
            eq({who(get(cd.port)) for _ in range(6)}, {"p2"}, "one primary left")
            eq(traffic(bk), 0, "backup still idle")
            p2.close()
            wait_for(lambda: state_of(cd, p2) == "down", 2, what="p2 down")
            eq({who(get(cd.port)) for _ in range(6)}, {"bk"}, "backup serves")
            p1.mode = "echo"
            wait_for(lambda: state_of(cd, p1) == "up", 2, what="p1 back")
            eq({who(get(cd.port)) for _ in range(6)}, {"p1"}, "primary back, backup idle")


@t.test("every server down: 503 with a clear body in under 100 ms, not a hang")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a:
        with Clawd(cfg(tmp, a, health=dict(FAST_CHECK))) as cd:
            a.mode, a.status = "status", 500
            wait_for(lambda: state_of(cd, a) == "down", 2, what="a down")
            worst = 0.0
            for _ in range(5):
                t0 = time.monotonic()
                r = get(cd.port)
                worst = max(worst, time.monotonic() - t0)
                eq(r.status, 503, "status")
                check(b"no healthy backend server" in r.body, "body %r" % r.body)
            note("slowest 503: %.1f ms" % (worst * 1000))
            check(worst < 0.1, "503 took %.3fs" % worst)
            log = cd.wait_log(5)
            eq(log[-1].get("error"), "no healthy server", "access log error")


@t.test("drain: the in-flight request finishes, new ones go elsewhere, --wait reports empty; kept across restart until the config changes it")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a, Backend(name="b") as b:
        c = cfg(tmp, a, b)
        with Clawd(c) as cd:
            res = {}

            def slow():
                res["r"] = get(cd.port, "/slow?sleep_ms=1200", timeout=10)

            th = threading.Thread(target=slow)
            th.start()
            busy = wait_for(lambda: [ad for ad, s in servers(cd).items() if s["active"] == 1], 2,
                            what="the slow request in flight")[0]
            other = a if busy == b.addr else b
            t0 = time.monotonic()
            out = ctl(cd, "backends", "drain", "pool", busy)[1]
            check("draining" in out and "1 in flight" in out, out)
            eq(servers(cd)[busy]["state"], "draining", "state")
            eq({who(get(cd.port)) for _ in range(8)}, {other.name}, "new requests")
            out = ctl(cd, "backends", "drain", "pool", busy, "--wait", "10s")[1]
            check("drained, nothing in flight" in out, out)
            th.join(10)
            eq(res["r"].status, 200, "the in-flight request")
            check(time.monotonic() - t0 >= 0.5, "--wait returned before the request ended")
            saved = json.load(open(os.path.join(tmp, "backends.json")))
            eq([(e["address"], e["drain"]) for e in saved["servers"]], [(busy, True)], "state file")
            ctl(cd, "backends", "weight", "pool", other.addr, "5")
            eq(servers(cd)[other.addr]["weight"], 5, "runtime weight")
        with Clawd(c) as cd:
            eq(servers(cd)[busy]["state"], "draining", "drain after restart")
            eq(servers(cd)[other.addr]["weight"], 5, "weight after restart")
            ctl(cd, "backends", "enable", "pool", busy)
            eq(servers(cd)[busy]["state"], "up", "enabled")
            ctl(cd, "backends", "drain", "pool", busy)
        # The operator edits that server's weight in the file: the file wins.
        for s in (0, 1):
            if c["upstreams"][0]["servers"][s] == busy:
                c["upstreams"][0]["servers"][s] = {"address": busy, "weight": 3}
        with Clawd(c) as cd:
            eq(servers(cd)[busy]["state"], "up", "config change overrides the saved drain")
            eq(servers(cd)[busy]["weight"], 3, "configured weight")
            eq(servers(cd)[other.addr]["weight"], 5, "the untouched server keeps its runtime weight")
            check("config changed" in cd.stderr(), cd.stderr())


@t.test("weight: runtime weight steers weighted round robin; bad values refused")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a, Backend(name="b") as b:
        with Clawd(cfg(tmp, a, b, algorithm="weighted_round_robin")) as cd:
            ctl(cd, "backends", "weight", "pool", a.addr, "3")
            names = [who(get(cd.port)) for _ in range(40)]
            eq((names.count("a"), names.count("b")), (30, 10), "3:1 split")
            s = servers(cd)[a.addr]
            eq((s["weight"], s["config_weight"], s["effective_weight"]), (3, 1, 3.0), "weights")
            rc, _, err = ctl(cd, "backends", "weight", "pool", "10.9.9.9:80", "2", want_rc=1)
            check("no server" in err, err)
            rc, _, err = ctl(cd, "backends", "drain", "nopool", a.addr, want_rc=1)
            check("no upstream named 'nopool'" in err, err)


@t.test("circuit breaker: max_requests 2 with a slow backend, the third gets 503 at once, counted, then recovers")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a:
        with Clawd(cfg(tmp, a, limits={"max_requests": 2})) as cd:
            res = []

            def slow():
                res.append(get(cd.port, "/s?sleep_ms=1000", timeout=10).status)

            ths = [threading.Thread(target=slow) for _ in range(2)]
            for th in ths:
                th.start()
            wait_for(lambda: servers(cd)[a.addr]["active"] == 2, 2, what="two in flight")
            t0 = time.monotonic()
            r = get(cd.port)
            took = time.monotonic() - t0
            eq(r.status, 503, "third request")
            check(b"concurrent request limit" in r.body, r.body)
            check(took < 0.1, "503 took %.3fs" % took)
            eq(pool_info(cd)["trips_max_requests"], 1, "trips counted")
            for th in ths:
                th.join(10)
            eq(res, [200, 200], "the two admitted requests")
            eq(get(cd.port).status, 200, "after the slow ones ended")
            out = ctl(cd, "backends", "list")[1]
            check("max_requests 2 (refused 1)" in out, out)


@t.test("circuit breaker: per-server max_connections sends the overflow to another server")
def _():
    tmp = make_tmpdir("health-")
    with Backend(name="a") as a, Backend(name="b") as b:
        c = cfg(tmp, a, b)
        c["upstreams"][0]["servers"] = [{"address": a.addr, "limits": {"max_connections": 1}},
                                        {"address": b.addr, "limits": {"max_connections": 1}}]
        with Clawd(c) as cd:
            res = []

            def slow():
                res.append(get(cd.port, "/s?sleep_ms=800", timeout=10))

            ths = [threading.Thread(target=slow) for _ in range(2)]
            for th in ths:
                th.start()
            wait_for(lambda: sum(s["active"] for s in servers(cd).values()) == 2, 2,
                     what="two in flight")
            r = get(cd.port)
            eq(r.status, 503, "a third connection has nowhere to go")
            check(b"connection limit" in r.body, r.body)
            for th in ths:
                th.join(10)
            eq(sorted(who(x) for x in res), ["a", "b"], "one per server")
            trips = sum(s["trips_max_connections"] for s in servers(cd).values())
            check(trips >= 1, "server trips counted: %d" % trips)


@t.test("clawctl backends: bad arguments exit 2 without contacting clawd")
def _():
    d = make_tmpdir("clawctl-args-")
    sock = os.path.join(d, "none.sock")
    for args in (["backends"], ["backends", "frob"], ["backends", "drain", "pool"],
                 ["backends", "drain", "pool", "nope"], ["backends", "weight", "pool", "1.2.3.4:80"],
                 ["backends", "weight", "pool", "1.2.3.4:80", "0"],
                 ["backends", "weight", "pool", "1.2.3.4:80", "1001"],
                 ["backends", "drain", "pool", "1.2.3.4:80", "--wait", "soon"],
                 ["backends", "list", "a", "b"], ["backends", "enable", "p", "1.2.3.4:80", "x"]):
        p = subprocess.run([CLAWCTL, "--socket", sock] + args, capture_output=True, text=True,
                           timeout=30)
        eq(p.returncode, 2, "exit status of clawctl %s" % " ".join(args))
        lines = p.stderr.strip().splitlines()
        eq(len(lines), 1, "stderr lines for %s: %r" % (args, p.stderr))
        check(lines[0].startswith("clawctl: ") and "cannot reach" not in lines[0], lines[0])


@t.test("config errors name file, line and key")
def _():
    d = make_tmpdir("health-cfg-")
    base = ("listeners:\n  - name: web\n    address: 127.0.0.1:1\n"
            "upstreams:\n  - name: pool\n    servers: [127.0.0.1:2]\n")
    cases = [
        ("    health: {type: udp}\n", ":7: upstreams[0].health.type: expected http or tcp"),
        ("    health: {interval: 1s, timeout: 2s}\n", "upstreams[0].health.timeout: must not be longer"),
        ("    health: {expect: [600]}\n", "upstreams[0].health.expect[0]"),
        ("    health: {type: tcp, path: /x}\n", "upstreams[0].health.path: only valid with type http"),
        ("    outlier: {max_ejected_percent: 150%}\n", "upstreams[0].outlier.max_ejected_percent"),
        ("    limits: {max_request: 3}\n", "upstreams[0].limits.max_request: unknown key"),
        ("    slow_start: fast\n", "upstreams[0].slow_start: expected a duration"),
    ]
    for extra, want in cases:
        p = os.path.join(d, "c.yaml")
        with open(p, "w") as f:
            f.write(base + extra + "routes:\n  - upstream: pool\n")
        rc, out, err = run_clawd(["--check", "-c", p])
        eq(rc, 1, "exit for %r" % extra)
        check(want in err and p in err, "error for %r: %s (want %r)" % (extra, err, want))
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        f.write("listeners:\n  - name: web\n    address: 127.0.0.1:1\n"
                "upstreams:\n  - name: pool\n    servers:\n      - {address: 127.0.0.1:2, backup: true}\n"
                "routes:\n  - upstream: pool\n")
    rc, out, err = run_clawd(["--check", "-c", p])
    eq(rc, 1, "all-backup pool")
    check("at least one must be a primary" in err, err)


t.main()
