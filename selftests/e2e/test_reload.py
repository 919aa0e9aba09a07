#!/usr/bin/env python3
# selftests/e2e/test_reload.py — live configuration reload: routes, servers, listeners, refusals, reloads under load.
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLAWD, Backend, Clawd, Client, Tap, check, eq, free_port, get,  # noqa: E402
                     to_yaml, wait_for)

t = Tap()
CLAWCTL = os.path.join(os.path.dirname(CLAWD), "clawctl")


def ctl(cd, *args):
    p = subprocess.run([CLAWCTL, "--socket", os.path.join(cd.dir, "ctl.sock")] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def reload_ok(cd):
    rc, out = ctl(cd, "reload")
    check(rc == 0 and "reloaded" in out, "clawctl reload: rc %d: %s" % (rc, out))
    return out


def config(be, routes=None, listeners=None, servers=None, workers=1):
    return {
        "workers": workers,
        "listeners": listeners or [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [{"name": "pool", "servers": servers or [be.addr]}],
        "routes": routes or [{"name": "a", "match": {"path_prefix": "/a"}, "upstream": "pool"}],
    }


def backend_of(r):
    return json.loads(r.body)["backend"]


@t.test("a route added by reload answers, a removed one stops (clawctl reload and SIGHUP)")
def _():
    with Backend() as be:
        cfg = config(be)
        with Clawd(cfg) as cd:
            eq(get(cd.port, "/a").status, 200, "route a")
            eq(get(cd.port, "/b").status, 404, "route b before the reload")
            cfg["routes"] = [{"name": "b", "match": {"path_prefix": "/b"}, "upstream": "pool"}]
            cd.rewrite(cfg)
            reload_ok(cd)
            eq(get(cd.port, "/b").status, 200, "route b after the reload")
            eq(get(cd.port, "/a").status, 404, "route a removed by the reload")
            cfg["routes"].append({"name": "a", "match": {"path_prefix": "/a"}, "upstream": "pool"})
            cd.rewrite(cfg)
            cd.signal(signal.SIGHUP)
            wait_for(lambda: get(cd.port, "/a").status == 200, 5, what="route a back after SIGHUP")
            rc, out = ctl(cd, "--json", "status")
            eq(rc, 0, "status")
            st = json.loads(out)
            eq(st["reloads"], 2, "reloads in status")
            eq(st["routes"], 2, "routes in status")


@t.test("an upstream server changed by reload gets the traffic")
def _():
    with Backend(name="one") as b1, Backend(name="two") as b2:
        cfg = config(b1, routes=[{"name": "all", "upstream": "pool"}])
        with Clawd(cfg) as cd:
            eq(backend_of(get(cd.port, "/")), "one", "before")
            cfg["upstreams"][0]["servers"] = [b2.addr]
            cd.rewrite(cfg)
            out = reload_ok(cd)
            check("pools rebuilt" in out, "reply says the pools were rebuilt: " + out)
            for _ in range(5):
                eq(backend_of(get(cd.port, "/")), "two", "after")


@t.test("backend state carries over: a drained server stays drained in rebuilt pools, enable follows")
def _():
    with Backend(name="one") as b1, Backend(name="two") as b2, Backend(name="three") as b3:
        cfg = config(b1, routes=[{"name": "all", "upstream": "pool"}], servers=[b1.addr, b2.addr])
        with Clawd(cfg) as cd:
            rc, out = ctl(cd, "backends", "drain", "pool", b1.addr)
            eq(rc, 0, "drain: " + out)
            cfg["upstreams"][0]["servers"] = [b1.addr, b2.addr, b3.addr]
            cd.rewrite(cfg)
            out = reload_ok(cd)
            check("pools rebuilt" in out, "pools rebuilt: " + out)
            seen = {backend_of(get(cd.port, "/")) for _ in range(12)}
            eq(seen, {"two", "three"}, "drained server kept out after the reload")
            rc, out = ctl(cd, "backends", "enable", "pool", b1.addr)
            eq(rc, 0, "enable: " + out)

            def one_back():
                return any(backend_of(get(cd.port, "/")) == "one" for _ in range(6))
            wait_for(one_back, 3, what="enabled server back in the rebuilt pool")


@t.test("a broken file is refused with FILE:LINE and the running config keeps serving")
def _():
    with Backend() as be:
        cfg = config(be)
        with Clawd(cfg) as cd:
            with open(cd.path, "a") as f:
                f.write("routes_typo: 1\n")
            rc, out = ctl(cd, "reload")
            eq(rc, 1, "refused reload exit status: " + out)
            check(cd.path + ":" in out and "routes_typo" in out, "FILE:LINE: KEY in: " + out)
            eq(get(cd.port, "/a").status, 200, "old config still serves")
            # A section set up once at start-up is refused by name.
            cfg2 = dict(cfg, drain_timeout="3s", pid_file=os.path.join(cd.dir, "clawd.pid"))
            cd.rewrite(cfg2)
            rc, out = ctl(cd, "reload")
            check(rc == 1 and "pid_file section changed" in out, "pid_file change refused: " + out)
            rc, out = ctl(cd, "--json", "status")
            eq(json.loads(out)["reload_failures"], 2, "refusals counted")
            eq(get(cd.port, "/a").status, 200, "still serving")


@t.test("a new listener opens, a removed one closes, a kept one is not reopened")
def _():
    with Backend() as be:
        keep = {"name": "web", "address": "127.0.0.1:%d" % free_port()}
        gone = {"name": "old", "address": "127.0.0.1:%d" % free_port()}
        new = {"name": "new", "address": "127.0.0.1:%d" % free_port()}
        cfg = config(be, listeners=[keep, gone], workers=2)
        with Clawd(cfg) as cd:
            kport = cd.listen_ports[0]
            gport = cd.listen_ports[1]
            nport = int(new["address"].rsplit(":", 1)[1])
            # A keep-alive connection on the kept listener rides through the reload.
            with Client(kport) as c:
                c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                eq(c.response().status, 200, "before")
                cfg["listeners"] = [keep, new]
                cd.rewrite(cfg)
                out = reload_ok(cd)
                check("1 listeners opened, 1 closed" in out, "reply: " + out)
                c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                eq(c.response().status, 200, "same connection after the reload")
            eq(get(nport, "/a").status, 200, "new listener")
            eq(get(kport, "/a").status, 200, "kept listener")

            def refused():
                s = socket.socket()
                s.settimeout(1)
                try:
                    s.connect(("127.0.0.1", gport))
                    return False
                except OSError:
                    return True
                finally:
                    s.close()
            wait_for(refused, 3, what="removed listener closed")
            # A listener that cannot bind fails the reload, nothing changes.
            blocker = socket.socket()
            blocker.bind(("127.0.0.1", 0))
            blocker.listen(1)
            try:
                cfg["listeners"] = [keep, new, {"name": "busy",
                                                "address": "127.0.0.1:%d" % blocker.getsockname()[1]}]
                cd.rewrite(cfg)
                rc, out = ctl(cd, "reload")
                check(rc == 1 and "listener busy" in out, "bind error refused: " + out)
                eq(get(nport, "/a").status, 200, "new listener still serves")
            finally:
                blocker.close()


@t.test("an in-flight slow request completes across a reload")
def _():
    with Backend() as be:
        cfg = config(be)
        with Clawd(cfg) as cd:
            res = {}

            def slow():
                try:
                    res["r"] = get(cd.port, "/a?sleep_ms=800", timeout=10)
                except Exception as e:  # noqa: BLE001 - reported below
                    res["e"] = e
            th = threading.Thread(target=slow)
            th.start()
            time.sleep(0.2)
            cfg["routes"] = [{"name": "b", "match": {"path_prefix": "/b"}, "upstream": "pool"}]
            cd.rewrite(cfg)
            reload_ok(cd)
            th.join(15)
            check("e" not in res, "slow request failed: %r" % res.get("e"))
            eq(res["r"].status, 200, "slow request under the old route")
            eq(get(cd.port, "/a").status, 404, "new requests use the new routes")


@t.test("50 reloads during keep-alive load: no socket error, no non-2xx")
def _():
    with Backend(name="one") as b1, Backend(name="two") as b2:
        cfg = config(b1, routes=[{"name": "all", "upstream": "pool"}], workers=2)
        with Clawd(cfg) as cd:
            stop = threading.Event()
            stats = {"ok": 0, "bad": [], "errors": []}
            lock = threading.Lock()

            def client():
                c = None
                try:
                    while not stop.is_set():
                        if c is None:
                            c = Client(cd.port, timeout=10)
                        c.send(b"GET /x HTTP/1.1\r\nHost: load\r\n\r\n")
                        r = c.response()
                        with lock:
                            if 200 <= r.status < 300:
                                stats["ok"] += 1
                            else:
                                stats["bad"].append(r.status)
                        if r.header("connection", "").lower() == "close":
                            c.close()
                            c = None
                except Exception as e:  # noqa: BLE001 - counted as a socket error
                    with lock:
                        stats["errors"].append(repr(e))
                finally:
                    if c:
                        c.close()
            threads = [threading.Thread(target=client) for _ in range(4)]
            for th in threads:
                th.start()
            try:
                time.sleep(0.3)
                for i in range(50):
                    # Alternate the server set and a route so pools and routes are rebuilt.
                    cfg["upstreams"][0]["servers"] = [b1.addr] if i % 2 else [b1.addr, b2.addr]
                    cfg["routes"] = [{"name": "all%d" % (i % 3), "upstream": "pool"}]
                    cd.rewrite(cfg)
                    if i % 5 == 4:
                        cd.signal(signal.SIGHUP)
                        time.sleep(0.2)
                    else:
                        reload_ok(cd)
                        time.sleep(0.15)
            finally:
                stop.set()
                for th in threads:
                    th.join(15)
            check(not stats["errors"], "socket errors: %r" % stats["errors"][:5])
            check(not stats["bad"], "non-2xx: %r" % stats["bad"][:10])
            check(stats["ok"] > 200, "requests served during the reloads: %d" % stats["ok"])
            rc, out = ctl(cd, "--json", "status")
            check(json.loads(out)["reloads"] >= 45, "reloads counted: " + out)


t.main()
