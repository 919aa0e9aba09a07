#!/usr/bin/env python3
# selftests/e2e/test_backends_rt.py — servers added and removed at run time (clawctl backends add/remove), kept across restarts, dropped when the file changes the pool; health checks follow rebuilt pools.
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (Backend, Clawd, Client, Tap, check, eq, free_port, get, make_tmpdir,  # noqa: E402
                     note, to_yaml, wait_for)

CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(harness.ROOT, "build", "clawctl")
HEALTH_PATH = "/healthz"
FAST_CHECK = {"type": "http", "path": HEALTH_PATH, "interval": "200ms", "jitter": "0%",
              "timeout": "150ms", "rise": 2, "fall": 3}

t = Tap()


def ctl(cd, *args, want_rc=0):
    p = subprocess.run([CLAWCTL, "--socket", os.path.join(cd.dir, "ctl.sock")] + list(args),
                       capture_output=True, text=True, timeout=30)
    if want_rc is not None and p.returncode != want_rc:
        raise AssertionError("clawctl %s: exit %d, want %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), p.returncode, want_rc, p.stdout, p.stderr))
    return p.returncode, p.stdout, p.stderr


def pool_info(cd, pool="pool"):
    return json.loads(ctl(cd, "--json", "backends", "list", pool)[1])["pools"][0]


def servers(cd, pool="pool"):
    return {s["address"]: s for s in pool_info(cd, pool)["servers"]}


def traffic(be):
    """Requests a backend saw that were not health checks."""
    with be.lock:
        return sum(1 for r in be.seen if not r.target.startswith(HEALTH_PATH))


def config(state_dir, *backends, workers=2, **upstream):
    c = {
        "workers": workers,
        "state_dir": state_dir,
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [dict({"name": "pool", "servers": [b.addr for b in backends]}, **upstream)],
        "routes": [{"name": "default", "upstream": "pool"}],
        "timeouts": {"connect": "1s", "upstream_response": "5s"},
    }
    return c


def who(r):
    eq(r.status, 200, "status of a proxied GET")
    return r.header("X-Backend")


@t.test("add: the new server takes traffic on every worker within 1 s, keep-alive connections included")
def _():
    tmp = make_tmpdir("brt-")
    with Backend(name="a") as a, Backend(name="b") as b:
        with Clawd(config(tmp, a)) as cd:
            # Connections opened before the change: SO_REUSEPORT spreads 16 of them over both
            # workers (all on one worker: odds 1 in 32768), and each stays on its worker.
            clients = [Client(cd.port) for _ in range(16)]
            try:
                for c in clients:
                    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    eq(who(c.response()), "a", "before the add")
                out = ctl(cd, "backends", "add", "pool", b.addr)[1]
                t0 = time.monotonic()
                check("added" in out and "2 servers" in out, "add output: %r" % out)
                # Round robin alternates per worker: 3 picks in a row on one connection must
                # reach b if that connection's worker uses the new pool.
                for i, c in enumerate(clients):
                    seen = set()
                    for _ in range(3):
                        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                        seen.add(who(c.response()))
                    check("b" in seen, "connection %d never reached the added server: %r" % (i, seen))
                took = time.monotonic() - t0
                note("every connection reached b %.0f ms after the command returned" % (took * 1000))
                check(took < 1.0, "took %.2fs" % took)
            finally:
                for c in clients:
                    c.close()
            s = servers(cd)
            eq(sorted(s), sorted([a.addr, b.addr]), "servers listed")
            eq(s[b.addr]["origin"], "runtime", "origin of the added server")
            eq(s[a.addr]["origin"], "config", "origin of the file's server")
            check("added at run time" in ctl(cd, "backends", "list")[1], "human list marks it")
            saved = json.load(open(os.path.join(tmp, "backends.json")))
            eq([(p["pool"], [x["address"] for x in p["add"]]) for p in saved["pools"]],
               [("pool", [b.addr])], "saved runtime servers")
            check("upstream pool %s: added (weight 1)" % b.addr in cd.stderr(), "log line")


@t.test("remove under load: 0 failed requests, in-flight ones finish, no new request after 1 s, idle connections closed")
def _():
    tmp = make_tmpdir("brt-")
    with Backend(name="a") as a, Backend(name="b", mode="slow", delay=0.3) as b, \
            Backend(name="c") as c:
        with Clawd(config(tmp, a, b, c, keepalive=8)) as cd:
            stop = threading.Event()
            results = {"ok": 0, "bad": []}
            lock = threading.Lock()

            def loop():
                cl = None
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        if cl is None:
                            cl = Client(cd.port)
                        cl.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                        r = cl.response()
                        with lock:
                            if r.status == 200:
                                results["ok"] += 1
                            else:
                                results["bad"].append(r.status)
                    except Exception as e:  # noqa: B902 — every failure counts
                        with lock:
                            results["bad"].append(repr(e))
                        if cl:
                            cl.close()
                        cl = None
                if cl:
                    cl.close()

            threads = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
            for th in threads:
                th.start()
            try:
                wait_for(lambda: traffic(b) >= 4 and len(b.conns) > 0, 5, what="b busy")
                out = ctl(cd, "backends", "remove", "pool", b.addr)[1]
                check("removed" in out and "2 servers left" in out, "remove output: %r" % out)
                time.sleep(1.0)
                n = traffic(b)
                time.sleep(1.5)
                eq(traffic(b), n, "requests that reached the removed server 1 s after the command")
                # Idle pooled connections close at once, busy ones when their exchange ends.
                wait_for(lambda: len(b.conns) == 0, 3, what="connections to b closed")
            finally:
                stop.set()
                for th in threads:
                    th.join(10)
            note("%d requests, failures: %r" % (results["ok"], results["bad"][:5]))
            eq(results["bad"], [], "failed requests")
            check(results["ok"] > 20, "requests made: %d" % results["ok"])
            eq(sorted(servers(cd)), sorted([a.addr, c.addr]), "servers listed")
            eq(pool_info(cd)["runtime_removed"], [b.addr], "runtime_removed")
            check(a.errors == [] and b.errors == [] and c.errors == [], "backend errors")


@t.test("add survives a restart; removing what was added leaves nothing saved")
def _():
    tmp = make_tmpdir("brt-")
    with Backend(name="a") as a, Backend(name="b") as b:
        cfg = config(tmp, a, workers=1)
        with Clawd(cfg) as cd:
            ctl(cd, "backends", "add", "pool", b.addr, "--weight", "3")
        with Clawd(cfg) as cd:
            s = servers(cd)
            check(b.addr in s, "b after restart: %r" % sorted(s))
            eq((s[b.addr]["origin"], s[b.addr]["weight"]), ("runtime", 3), "origin, weight")
            got = {who(get(cd.port)) for _ in range(8)}
            eq(got, {"a", "b"}, "servers answering after restart")
            check("runtime server changes restored" in cd.stderr(), "restore logged")
            ctl(cd, "backends", "remove", "pool", b.addr)
            eq(sorted(servers(cd)), [a.addr], "after removing it")
            eq(json.load(open(os.path.join(tmp, "backends.json")))["pools"], [],
               "saved runtime server changes")


@t.test("the file wins: a reload that changes the pool drops runtime changes and the list says so")
def _():
    tmp = make_tmpdir("brt-")
    with Backend(name="a") as a, Backend(name="b") as b, Backend(name="c") as c, \
            Backend(name="d") as d:
        cfg = config(tmp, a, b)
        with Clawd(cfg) as cd:
            ctl(cd, "backends", "add", "pool", c.addr)
            ctl(cd, "backends", "remove", "pool", b.addr)
            # Another section changes: the pool is the same, the runtime changes stay.
            cfg2 = dict(cfg, routes=[{"name": "default", "upstream": "pool"},
                                     {"name": "x", "match": {"path": "/x"}, "upstream": "pool"}])
            cd.rewrite(cfg2)
            ctl(cd, "reload")
            eq(sorted(servers(cd)), sorted([a.addr, c.addr]), "after a reload not touching the pool")
            # The pool changes in the file: the file wins.
            cfg3 = dict(cfg2, upstreams=[{"name": "pool", "servers": [a.addr, b.addr, d.addr]}])
            cd.rewrite(cfg3)
            out = ctl(cd, "reload")[1]
            check("pools rebuilt" in out, out)
            eq(sorted(servers(cd)), sorted([a.addr, b.addr, d.addr]), "after the pool changed")
            info = pool_info(cd)
            eq(info["runtime_removed"], [], "runtime_removed")
            dropped = info["runtime_dropped"] or ""
            check("changed upstream pool" in dropped and c.addr in dropped and b.addr in dropped,
                  "runtime_dropped: %r" % dropped)
            human = ctl(cd, "backends", "list")[1]
            check("runtime changes dropped" in human, "human list:\n" + human)
            check("runtime changes dropped" in cd.stderr(), "log line")
            eq(json.load(open(os.path.join(tmp, "backends.json")))["pools"], [], "saved set")
            got = {who(get(cd.port)) for _ in range(9)}
            eq(got, {"a", "b", "d"}, "servers answering")


@t.test("health checks follow rebuilt pools: a killed server goes down, added servers are checked")
def _():
    tmp = make_tmpdir("brt-")
    with Backend(name="a") as a, Backend(name="c") as c, Backend(name="d") as d:
        b = Backend(name="b")
        cfg = config(tmp, a, b, health=dict(FAST_CHECK))
        try:
            with Clawd(cfg) as cd:
                wait_for(lambda: servers(cd)[b.addr]["check_ok"] is True, 3, what="first check")
                before = servers(cd)[b.addr]["check_successes"]
                cfg2 = dict(cfg, upstreams=[dict(cfg["upstreams"][0], servers=[a.addr, b.addr, c.addr])])
                cd.rewrite(cfg2)
                check("pools rebuilt" in ctl(cd, "reload")[1], "reload rebuilt the pools")
                # History carried by address; the server the reload added is checked too.
                check(servers(cd)[b.addr]["check_successes"] >= before, "b's streak kept")
                wait_for(lambda: servers(cd)[c.addr]["check_ok"] is True, 3, what="c checked")
                ctl(cd, "backends", "add", "pool", d.addr)
                wait_for(lambda: servers(cd)[d.addr]["check_ok"] is True, 3, what="d checked")
                b.close()
                t0 = time.monotonic()
                wait_for(lambda: servers(cd)[b.addr]["state"] == "down", 3, 0.01, what="b down")
                took = time.monotonic() - t0
                note("down %.0f ms after the kill (interval 200ms x fall 3)" % (took * 1000))
                check(took <= 0.2 * 4 + 0.5, "down took %.2fs" % took)
                line = [ln for ln in ctl(cd, "backends", "list")[1].splitlines() if b.addr in ln]
                check(len(line) == 1 and " down " in line[0], "human list: %r" % line)
                for _ in range(9):
                    check(who(get(cd.port)) in ("a", "c", "d"), "served by a live server")
                check(": down (3 failed checks" in cd.stderr(), "down logged")
        finally:
            b.close()


@t.test("bad arguments: syntax exits 2 without clawd, refusals exit 1 with the reason")
def _():
    tmp = make_tmpdir("brt-")
    sock = os.path.join(tmp, "no-such.sock")
    for args in (["backends", "add", "pool"], ["backends", "add", "pool", "nope:80"],
                 ["backends", "add", "pool", "1.2.3.4"], ["backends", "add", "pool", "1.2.3.4:80", "x"],
                 ["backends", "add", "pool", "1.2.3.4:80", "--weight", "0"],
                 ["backends", "add", "pool", "1.2.3.4:80", "--weight", "1001"],
                 ["backends", "add", "pool", "1.2.3.4:80", "--frob"],
                 ["backends", "remove", "pool"], ["backends", "remove", "pool", "1.2.3.4:80", "--backup"]):
        p = subprocess.run([CLAWCTL, "--socket", sock] + args, capture_output=True, text=True,
                           timeout=10)
        eq(p.returncode, 2, "exit of %r (stderr %r)" % (args, p.stderr))
        check(p.stderr.startswith("clawctl: ") and p.stderr.count("\n") == 1,
              "one line: %r" % p.stderr)
    with Backend(name="a") as a, Backend(name="b") as b:
        with Clawd(config(tmp, a, workers=1)) as cd:
            for args, why in ((["add", "nopool", b.addr], "no upstream named 'nopool'"),
                              (["add", "pool", a.addr], "already has server"),
                              (["add", "pool", "0.0.0.0:80"], "not a server address"),
                              (["remove", "pool", b.addr], "has no server"),
                              (["remove", "pool", a.addr], "last primary")):
                _, _, err = ctl(cd, "backends", *args, want_rc=1)
                check(why in err and err.count("\n") == 1, "%r: %r" % (args, err))
            ctl(cd, "backends", "add", "pool", b.addr, "--backup")
            s = servers(cd)
            eq(s[b.addr]["backup"], True, "added as a backup")
            _, _, err = ctl(cd, "backends", "remove", "pool", a.addr, want_rc=1)
            check("last primary" in err, "a backup does not count: %r" % err)
            eq(sorted(servers(cd)), sorted([a.addr, b.addr]), "nothing changed by refusals")


t.main()
