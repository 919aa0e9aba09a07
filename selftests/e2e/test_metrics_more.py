# selftests/e2e/test_metrics_more.py — /metrics families of the gate and health modules: auth results, rate-limit
# and quota rejections, server state, health checks, ejections and breaker trips, counted exactly under a known mix.
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (Backend, Clawd, Skip, Tap, check, eq, free_port, get, make_tmpdir,  # noqa: E402
                     metrics_sample, metrics_scrape,
                     remove_tmpdir, wait_for)

t = Tap()
CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(os.path.dirname(harness.CLAWD), "clawctl")
PROMTOOL = shutil.which("promtool")
CHECK = {"type": "tcp", "interval": "100ms", "jitter": "0%", "timeout": "80ms", "rise": 1, "fall": 2}


def ctl_json(cd, *args):
    p = subprocess.run([CLAWCTL, "-s", cd.config["control"]["socket"], "--json"] + list(args),
                       capture_output=True, timeout=10)
    check(p.returncode == 0, "clawctl %s: %s" % (" ".join(args), p.stderr.decode()))
    return json.loads(p.stdout)


scrape = metrics_scrape
sample = metrics_sample


def promtool_check(text):
    if not PROMTOOL:
        return
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    check(p.returncode == 0, "promtool check metrics failed (%d):\n%s%s" % (
        p.returncode, p.stdout.decode(), p.stderr.decode()))


def config(st, be, down, e1, e2):
    return {
        "workers": 2,
        "state_dir": st,
        "control": {"socket": os.path.join(st, "ctl.sock")},
        "admin": {"address": "127.0.0.1:%d" % free_port()},
        "tiers": [{"name": "free", "rate": "1000/s", "burst": 1000}],
        "timeouts": {"connect": "1s", "upstream_response": "5s"},
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [
            {"name": "pool", "servers": [be.addr, down.addr], "health": dict(CHECK)},
            {"name": "ej", "servers": [e1.addr, e2.addr],
             "outlier": {"consecutive_failures": 2, "base_ejection": "60s"}},
        ],
        "routes": [
            {"name": "keyed", "match": {"path_prefix": "/k/"}, "upstream": "pool", "auth": "api_key"},
            {"name": "perip", "match": {"path_prefix": "/ip/"}, "upstream": "pool",
             "limits": [{"key": "ip", "rate": "1/m", "burst": 3}]},
            {"name": "eject", "match": {"path_prefix": "/e/"}, "upstream": "ej"},
        ],
    }


@t.test("auth, rate-limit, health and ejection counters match a known request mix exactly; promtool accepts them")
def _():
    st = make_tmpdir("clawd-metr-")
    try:
        with Backend(name="a") as be, Backend(name="b") as down, Backend(name="e1") as e1, \
                Backend(name="e2") as e2, Clawd(config(st, be, down, e1, e2)) as cd:
            key = ctl_json(cd, "keys", "create", "--name", "m", "--tier", "free")["key"]
            key2 = ctl_json(cd, "keys", "create", "--name", "m2", "--tier", "free")["key"]
            kid = key[4:16]
            # Same id, another key's (well-formed) secret; and an id no key has (the id reversed).
            bad = key[:17] + key2[17:]
            unknown = key[:4] + kid[::-1] + key[16:]
            check(kid[::-1] != kid and kid[::-1] != key2[4:16], "reversed id differs")
            before = scrape(cd)
            promtool_check(before)
            # Every family is there from the start, at zero.
            eq(sample(before, "openclaw_auth_results_total", route="keyed", result="ok"), 0, "ok before")
            check('openclaw_auth_results_total{route="keyed",result="missing"} 0' in before, before)
            check('openclaw_ratelimit_rejections_total{route="perip",key="ip"} 0' in before, before)
            check('openclaw_quota_rejections_total{route="keyed",period="day"} 0' in before, before)
            # Take a server down first so the mix is served by the healthy one only.
            down.close()
            wait_for(lambda: sample(scrape(cd), "openclaw_upstream_server_up", upstream="pool",
                                    server=down.addr) == 0, 3, 0.02, what="b reported down")

            n_ok, n_missing, n_unknown, n_wrong, burst, n_over = 7, 4, 2, 3, 3, 5
            for i in range(n_ok):
                eq(get(cd.port, "/k/%d" % i, headers=[("X-API-Key", key)]).status, 200, "valid key")
            for i in range(n_missing):
                eq(get(cd.port, "/k/m%d" % i).status, 401, "missing key")
            for i in range(n_unknown):
                eq(get(cd.port, "/k/u", headers=[("X-API-Key", unknown)]).status, 401, "unknown key")
            for i in range(n_wrong):
                eq(get(cd.port, "/k/w", headers=[("X-API-Key", bad)]).status, 401, "wrong secret")
            codes = [get(cd.port, "/ip/%d" % i).status for i in range(burst + n_over)]
            eq(codes, [200] * burst + [429] * n_over, "ip limit statuses")
            for i in range(6):
                get(cd.port, "/e/%d?status=503" % i)

            after = scrape(cd)
            promtool_check(after)
            res = lambda r: sample(after, "openclaw_auth_results_total", route="keyed", result=r)  # noqa: E731
            eq(res("ok"), n_ok, "auth ok")
            eq(res("missing"), n_missing, "auth missing")
            eq(res("unknown_key"), n_unknown, "auth unknown key")
            eq(res("malformed"), 0, "auth malformed")
            eq(res("wrong_secret"), n_wrong, "auth wrong secret")
            eq(res("revoked") + res("expired") + res("out_of_scope"), 0, "no other refusals")
            eq(sample(after, "openclaw_ratelimit_rejections_total", route="perip", key="ip"), n_over,
               "ip limit rejections")
            eq(sample(after, "openclaw_ratelimit_rejections_total", route="keyed", key="key_tier"), 0,
               "tier rejections")
            eq(sample(after, "openclaw_quota_rejections_total", route="keyed", period="day"), 0, "quota")
            check(kid not in after, "key ids stay out of /metrics (cardinality)")

            up = lambda s: sample(after, "openclaw_upstream_server_up", upstream="pool", server=s)  # noqa: E731
            eq(up(be.addr), 1, "healthy server up")
            eq(up(down.addr), 0, "closed server down")
            eq(sample(after, "openclaw_upstream_server_state", upstream="pool", server=down.addr,
                      state="down"), 1, "state{down}")
            eq(sample(after, "openclaw_upstream_server_state", upstream="pool", server=down.addr,
                      state="up"), 0, "state{up} of the down server")
            eq(sample(after, "openclaw_health_checks_total", upstream="pool", server=be.addr, result="fail"),
               0, "no failed check on the healthy server")
            check(sample(after, "openclaw_health_checks_total", upstream="pool", server=be.addr,
                         result="ok") >= 1, "passed checks counted")
            check(sample(after, "openclaw_health_checks_total", upstream="pool", server=down.addr,
                         result="fail") >= CHECK["fall"], "failed checks counted (at least fall)")
            ej = [sample(after, "openclaw_upstream_ejections_total", upstream="ej", server=s)
                  for s in (e1.addr, e2.addr)]
            eq(sorted(ej), [0, 1], "exactly one ejection (the pool's share allows one)")
            eq(sum(sample(after, "openclaw_upstream_server_state", upstream="ej", server=s, state="ejected")
                   for s in (e1.addr, e2.addr)), 1, "one server in state ejected")
            eq(sample(after, "openclaw_breaker_trips_total", upstream="pool", server="", kind="max_requests"),
               0, "no breaker trip")
    finally:
        remove_tmpdir(st)


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256(payload, secret):
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64u(json.dumps(payload).encode())
    sig = hmac.new(secret, ("%s.%s" % (h, p)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (h, p, b64u(sig))


@t.test("jwt refusals are counted by reason code: 3 ok, 2 expired, 1 bad signature, 2 missing")
def _():
    st = make_tmpdir("clawd-metr-")
    secret = b"metrics-e2e-secret-0123456789abcdefghijklmnopqrstuvwxyz"
    try:
        sec = os.path.join(st, "hs.key")
        fd = os.open(sec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, secret + b"\n")
        os.close(fd)
        with Backend() as be:
            cfg = {
                "admin": {"address": "127.0.0.1:%d" % free_port()},
                "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
                "upstreams": [{"name": "pool", "servers": [be.addr]}],
                "routes": [{"name": "tok", "upstream": "pool",
                            "auth": {"type": "jwt", "algorithms": ["HS256"], "hmac_secret_file": sec}}],
            }
            with Clawd(cfg) as cd:
                now = int(time.time())
                good = hs256({"sub": "a", "exp": now + 300}, secret)
                old = hs256({"sub": "a", "exp": now - 300}, secret)
                forged = hs256({"sub": "a", "exp": now + 300}, secret + b"x")
                for tok, n, want in ((good, 3, 200), (old, 2, 401), (forged, 1, 401), (None, 2, 401)):
                    for _ in range(n):
                        h = [("Authorization", "Bearer " + tok)] if tok else []
                        eq(get(cd.port, "/x", headers=h).status, want, "status")
                text = scrape(cd)
                promtool_check(text)
                res = lambda r: sample(text, "openclaw_auth_results_total", route="tok", result=r)  # noqa: E731
                eq(res("ok"), 3, "ok")
                eq(res("jwt_expired"), 2, "expired")
                eq(res("jwt_bad_signature"), 1, "bad signature")
                eq(res("jwt_missing_token"), 2, "missing")
                eq(res("missing"), None, "api_key results are not listed on a jwt route")
    finally:
        remove_tmpdir(st)


@t.test("/metrics with the new families passes promtool")
def _():
    if not PROMTOOL:
        raise Skip("promtool not installed (Debian package prometheus)")
    st = make_tmpdir("clawd-metr-")
    try:
        with Backend() as be, Backend() as d, Backend() as e1, Backend() as e2, \
                Clawd(config(st, be, d, e1, e2)) as cd:
            text = scrape(cd)
            promtool_check(text)
            for fam in ("openclaw_auth_results_total", "openclaw_ratelimit_rejections_total",
                        "openclaw_quota_rejections_total", "openclaw_upstream_server_up",
                        "openclaw_upstream_server_state", "openclaw_health_checks_total",
                        "openclaw_upstream_ejections_total", "openclaw_breaker_trips_total"):
                check("# TYPE %s " % fam in text, "family %s missing" % fam)
    finally:
        remove_tmpdir(st)



@t.test("per-key labels (admin.per_key_labels): exact counts per key id, the cap folds later keys into other")
def _():
    st = make_tmpdir("clawd-metr-")
    try:
        with Backend() as be:
            cfg = {
                "workers": 2,
                "state_dir": st,
                "control": {"socket": os.path.join(st, "ctl.sock")},
                "admin": {"address": "127.0.0.1:%d" % free_port(), "per_key_labels": True,
                          "per_key_labels_max": 2},
                "tiers": [{"name": "free", "rate": "1000/s", "burst": 1000}],
                "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
                "upstreams": [{"name": "pool", "servers": [be.addr]}],
                "routes": [
                    {"name": "keyed", "match": {"path_prefix": "/k/"}, "upstream": "pool", "auth": "api_key"},
                    {"name": "other", "match": {"path_prefix": "/o/"}, "upstream": "pool", "auth": "api_key"},
                ],
            }
            with Clawd(cfg) as cd:
                keys = [ctl_json(cd, "keys", "create", "--name", "k%d" % i, "--tier", "free")["key"]
                        for i in range(3)]
                scoped = ctl_json(cd, "keys", "create", "--name", "s", "--tier", "free", "--scopes", "other")["key"]
                ids = [k[4:16] for k in keys]
                # Seen in this order: keys 0 and 1 get labels of their own, key 2 and the scoped key are "other".
                mix = [(0, 3), (1, 2), (2, 4)]
                for k, n in mix:
                    for i in range(n):
                        eq(get(cd.port, "/k/%d" % i, headers=[("X-API-Key", keys[k])]).status, 200, "key %d" % k)
                eq(get(cd.port, "/k/s", headers=[("X-API-Key", scoped)]).status, 403, "out of scope")
                eq(get(cd.port, "/k/none").status, 401, "no key: no per-key series")
                text = scrape(cd)
                promtool_check(text)
                kr = lambda i, r: sample(text, "openclaw_auth_key_results_total", key_id=i, result=r)  # noqa: E731
                eq(kr(ids[0], "ok"), 3, "key 0")
                eq(kr(ids[1], "ok"), 2, "key 1")
                check(ids[2] not in text, "key 2 past the cap has no label of its own")
                eq(kr("other", "ok"), 4, "key 2 under other")
                eq(kr("other", "out_of_scope"), 1, "scoped key refused, under other")
                for k in keys + [scoped]:
                    check(k[17:] not in text, "a secret in /metrics")
                eq(len(re.findall(r"^openclaw_auth_key_results_total\{", text, re.M)), 4,
                   "series: two keys, other ok, other out_of_scope")
    finally:
        remove_tmpdir(st)


# ---- kernel counters against the maps themselves (bpftool) ------------------------------------

PID = os.getpid()
NS = "ocl-obs-%d" % PID
VETH, PEER = "vo%d" % PID, "po%d" % PID
_NET = 2 * (PID % 127) + 1
SRV_IP, NS_IP = "10.214.%d.1" % _NET, "10.214.%d.2" % _NET
GUARD_PIN = "/sys/fs/bpf/ocl-e2e-obs-%d" % PID
SPLICE_PIN = "/sys/fs/bpf/ocl-e2e-obs-splice-%d" % PID
GUARD_REASONS = ["pass", "allowlisted", "blocklisted", "syn_rate", "pkt_rate", "unparsed_pass",
                 "unparsed_drop", "not_protected", "fragment", "disabled"]


def sh(*args, check_rc=True):
    p = subprocess.run(list(args), capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    if check_rc and p.returncode:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr.decode().strip()))
    return p


def need_bpf():
    if os.geteuid() != 0:
        raise Skip("needs root (namespaces, XDP, sockmap)")
    if not os.path.ismount("/sys/fs/bpf"):
        raise Skip("bpffs is not mounted at /sys/fs/bpf")
    if not shutil.which("bpftool"):
        raise Skip("bpftool not installed")


def net_down():
    subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "del", VETH], stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", GUARD_PIN, SPLICE_PIN], stderr=subprocess.DEVNULL)


def net_up():
    net_down()
    try:
        sh("ip", "netns", "add", NS)
    except RuntimeError as e:
        raise Skip("network namespaces unavailable: %s" % e)
    sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", PEER)
    sh("ip", "link", "set", PEER, "netns", NS)
    sh("ip", "addr", "add", SRV_IP + "/24", "dev", VETH)
    sh("ip", "link", "set", VETH, "up")
    sh("ip", "-n", NS, "addr", "add", NS_IP + "/24", "dev", PEER)
    sh("ip", "-n", NS, "link", "set", PEER, "up")
    sh("ip", "-n", NS, "link", "set", "lo", "up")


PROBE = ("import socket,sys\n"
         "n=0\n"
         "for i in range(int(sys.argv[3])):\n"
         "    s=socket.socket(); s.settimeout(float(sys.argv[4]))\n"
         "    try:\n"
         "        s.connect((sys.argv[1],int(sys.argv[2]))); s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
         "        n+=s.recv(64).startswith(b'HTTP/1.1 200')\n"
         "    except OSError: pass\n"
         "    finally: s.close()\n"
         "print(n)\n")


def probe_from_ns(port, count, timeout):
    """count connections from the namespace; how many got a 200."""
    p = sh("ip", "netns", "exec", NS, sys.executable, "-c", PROBE, SRV_IP, str(port), str(count), str(timeout))
    return int(p.stdout.decode().strip())


def le(v):
    return int.from_bytes(bytes(int(b, 16) for b in v), "little")


def percpu_dump(path, fields):
    """{index: [sum of field over CPUs, ...]} of a pinned per-CPU array, read with bpftool."""
    p = sh("bpftool", "-j", "map", "dump", "pinned", path)
    out = {}
    for e in json.loads(p.stdout):
        f = e.get("formatted")
        if f:
            v = [sum(c["value"][k] if isinstance(c["value"], dict) else c["value"] for c in f["values"])
                 for k in fields]
            out[f["key"]] = v
        else:
            key = e["key"] if isinstance(e["key"], int) else le(e["key"])
            out[key] = [sum(le(c["value"][8 * i:8 * i + 8]) for c in e["values"]) for i in range(len(fields))]
    return out


@t.test("XDP: openclaw_xdp_packets/bytes_total equal bpftool's dump of the pinned guard_stats")
def _():
    need_bpf()
    try:
        net_up()
        st = make_tmpdir("clawd-metr-")
        port = free_port()
        cfg = {
            "workers": 1,
            "state_dir": st,
            "control": {"socket": os.path.join(st, "ctl.sock")},
            "admin": {"address": "127.0.0.1:%d" % free_port()},
            # The loopback listener is how the harness sees clawd listening (same port).
            "listeners": [{"name": "lo", "address": "127.0.0.1:%d" % port},
                          {"name": "ns", "address": "%s:%d" % (SRV_IP, port)}],
            "routes": [{"name": "hello", "respond": {"status": 200, "body": "hi\n"}}],
            "guard": {"interfaces": [VETH], "mode": "native", "pin_dir": GUARD_PIN, "ports": [port]},
        }
        cd = Clawd(cfg)
        try:
            cd.start()
            wait_for(lambda: os.path.exists(os.path.join(GUARD_PIN, "guard_stats")), 5,
                     what="guard_stats pinned")
            eq(probe_from_ns(port, 5, 2.0), 5, "served before the block")
            ctl_json(cd, "block", "add", NS_IP)
            eq(probe_from_ns(port, 3, 0.3), 0, "dropped once blocked")
            m1 = scrape(cd)
            k = percpu_dump(os.path.join(GUARD_PIN, "guard_stats"), ["packets", "bytes"])
            m2 = scrape(cd)
            promtool_check(m2)
            got = {GUARD_REASONS[i]: v for i, v in k.items() if i < len(GUARD_REASONS)}
            check(got.get("blocklisted", [0])[0] >= 3, "kernel counted the drops: %r" % got)
            check(got.get("pass", [0])[0] >= 5 * 3, "kernel counted the served connections: %r" % got)
            for r, (pk, by) in got.items():
                a1 = sample(m1, "openclaw_xdp_packets_total", reason=r)
                a2 = sample(m2, "openclaw_xdp_packets_total", reason=r)
                b1 = sample(m1, "openclaw_xdp_bytes_total", reason=r)
                b2 = sample(m2, "openclaw_xdp_bytes_total", reason=r)
                check(a1 is not None and b1 is not None, "reason %s exported" % r)
                # Scrapes around the dump: equal unless a packet arrived in between.
                check(a1 <= pk <= a2, "%s packets: /metrics %s..%s, bpftool %d" % (r, a1, a2, pk))
                check(b1 <= by <= b2, "%s bytes: /metrics %s..%s, bpftool %d" % (r, b1, b2, by))
            # Nothing else sends to the guarded port: these two are exact.
            eq(sample(m2, "openclaw_xdp_packets_total", reason="blocklisted"), got["blocklisted"][0], "blocklisted")
            eq(sample(m2, "openclaw_xdp_bytes_total", reason="blocklisted"), got["blocklisted"][1], "blocklisted bytes")
            cd.stop()
        finally:
            cd._teardown()
            remove_tmpdir(st)
    finally:
        net_down()


OK_RESP = b"HTTP/1.1 200 OK\r\nX-Request-ID: b-1\r\nContent-Length: 2\r\n\r\nok"


def echo_backend():
    """Answers the first request head with OK_RESP, then echoes until EOF (what splice mode hands off)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)

    def serve(c):
        try:
            c.settimeout(30)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            c.sendall(OK_RESP)
            rest = buf.split(b"\r\n\r\n", 1)[1]
            if rest:
                c.sendall(rest)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()

    def loop():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls


@t.test("splice: /metrics connections and bytes equal clawctl splice stats and the pinned splice_stats map")
def _():
    need_bpf()
    ls = echo_backend()
    st = make_tmpdir("clawd-metr-")
    try:
        port = free_port()
        cfg = {
            "workers": 1,
            "state_dir": st,
            "control": {"socket": os.path.join(st, "ctl.sock")},
            "admin": {"address": "127.0.0.1:%d" % free_port()},
            "listeners": [{"name": "web", "address": "127.0.0.1:%d" % port}],
            "upstreams": [{"name": "pool", "servers": ["127.0.0.1:%d" % ls.getsockname()[1]]}],
            "routes": [{"name": "sp", "upstream": "pool", "mode": "splice"}],
            "splice": {"pin_dir": SPLICE_PIN},
        }
        with Clawd(cfg) as cd:
            if not ctl_json(cd, "splice", "stats")["loaded"]:
                raise Skip("splice program not loaded: %s" % ctl_json(cd, "splice", "stats").get("reason"))
            sizes = [100000, 250000, 7]
            req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
            for n in sizes:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(req)
                head = b""
                while len(head) < len(OK_RESP):
                    head += s.recv(len(OK_RESP) - len(head))
                eq(head, OK_RESP, "first response")
                s.sendall(b"x" * n)
                got = 0
                while got < n:
                    d = s.recv(1 << 20)
                    check(d, "echo ended early")
                    got += len(d)
                s.shutdown(socket.SHUT_WR)
                eq(s.recv(10), b"", "FIN after the echo")
                s.close()
            wait_for(lambda: ctl_json(cd, "splice", "stats")["closed"] >= len(sizes), 5,
                     what="spliced connections closed")
            js = ctl_json(cd, "splice", "stats")
            text = scrape(cd)
            k = percpu_dump(os.path.join(SPLICE_PIN, "splice_stats"), ["v"])
            promtool_check(text)
            conn = lambda e: sample(text, "openclaw_splice_connections_total", event=e)  # noqa: E731
            eq(conn("spliced"), js["spliced"], "spliced: /metrics vs clawctl")
            eq(conn("spliced"), len(sizes), "spliced: one per connection")
            eq(conn("closed"), js["closed"], "closed: /metrics vs clawctl")
            eq(sample(text, "openclaw_splice_active"), js["active"], "active")
            eq(sample(text, "openclaw_splice_active"), 0, "none open")
            eq(sample(text, "openclaw_splice_fallbacks_total"), js["fallbacks"], "fallbacks")
            bb = sample(text, "openclaw_splice_bytes_total", direction="to_backend")
            bc = sample(text, "openclaw_splice_bytes_total", direction="to_client")
            eq(bb, js["bytes_to_backend"], "to_backend: /metrics vs clawctl")
            eq(bc, js["bytes_to_client"], "to_client: /metrics vs clawctl")
            eq(bb, sum(sizes), "to_backend: the bytes sent after the hand-off")
            eq(bc, sum(sizes), "to_client: the bytes echoed")
            # The kernel's own view: per-CPU counters summed, the same in clawctl, /metrics and bpftool.
            names = ["redirect_packets", "redirect_bytes", "pass_packets", "pass_bytes"]
            for i, nm in enumerate(names):
                eq(k[i][0], js["kernel"][nm], "%s: bpftool vs clawctl" % nm)
            eq(sample(text, "openclaw_splice_kernel_bytes_total", verdict="redirect"), k[1][0],
               "redirect bytes: /metrics vs bpftool")
            eq(sample(text, "openclaw_splice_kernel_bytes_total", verdict="pass"), k[3][0],
               "pass bytes: /metrics vs bpftool")
            check(k[1][0] + k[3][0] >= 2 * sum(sizes), "the program saw every byte both ways: %r" % k)
    finally:
        ls.close()
        remove_tmpdir(st)
        subprocess.run(["rm", "-rf", SPLICE_PIN], stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    t.main()
