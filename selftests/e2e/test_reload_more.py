#!/usr/bin/env python3
# selftests/e2e/test_reload_more.py — live reload of what used to need a restart: certificates, TLS listeners, auth, rate limits, tiers, access log.
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLAWD, Backend, Clawd, Reader, Skip, Tap, check, eq, free_port, get,  # noqa: E402
                     hget, make_tmpdir, parse_head, remove_tmpdir, to_yaml, wait_for)

t = Tap()
CLAWCTL = os.path.join(os.path.dirname(CLAWD), "clawctl")
OPENSSL = shutil.which("openssl")


def sh(args, timeout=20):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def ctl(cd, *args):
    return sh([CLAWCTL, "--socket", os.path.join(cd.dir, "ctl.sock")] + list(args))


def reload_ok(cd):
    rc, out = ctl(cd, "reload")
    check(rc == 0 and "reloaded" in out, "clawctl reload: rc %d: %s" % (rc, out))
    return out


def reload_refused(cd, *needles):
    rc, out = ctl(cd, "reload")
    check(rc == 1, "clawctl reload should be refused: rc %d: %s" % (rc, out))
    for n in needles:
        check(n in out, "refusal names %r: %s" % (n, out))
    return out


class Pki:
    """A test CA and leaf certificates made with the openssl CLI in a temp dir."""

    def __init__(self):
        self.dir = make_tmpdir("clawd-rl-tls-")
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.serial = 100
        rc, out = sh([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "30",
                      "-subj", "/CN=clawd reload test CA"])
        check(rc == 0, "make CA: " + out)

    def leaf(self, name, names, cn=None):
        """Writes name.pem / name.key (0600) with a new key and serial; returns (cert, key, serial)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        rc, out = sh([OPENSSL, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", key + ".new", "-out", csr, "-subj", "/CN=" + (cn or names[0])])
        check(rc == 0, "leaf key: " + out)
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join("DNS:" + n for n in names) + "\n")
        self.serial += 1
        rc, out = sh([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-set_serial", str(self.serial), "-out", crt + ".new", "-days", "30",
                      "-extfile", ext])
        check(rc == 0, "sign leaf: " + out)
        os.chmod(key + ".new", 0o600)
        os.rename(key + ".new", key)
        os.rename(crt + ".new", crt)
        return crt, key, "%X" % self.serial

    def close(self):
        remove_tmpdir(self.dir)


def tls_listener(name, port, *certs):
    return {"name": name, "address": "127.0.0.1:%d" % port,
            "tls": {"certificates": [{"cert": c[0], "key": c[1]} for c in certs]}}


def config(be, listeners, routes=None, **extra):
    cfg = {
        "workers": 1,
        "listeners": listeners,
        "upstreams": [{"name": "pool", "servers": [be.addr]}],
        "routes": routes or [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "pool"}],
    }
    cfg.update(extra)
    return cfg


def tls_get(ctx, port, host, path="/", conn=None, session=None, headers=""):
    """One GET over (a new or the given) TLS connection; returns (conn, status, body)."""
    if conn is None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn = ctx.wrap_socket(raw, server_hostname=host, session=session)
    conn.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, headers)).encode())
    rd = Reader(conn, timeout=10)
    head = rd.read_until(b"\r\n\r\n", time.monotonic() + 10)
    start, hdrs = parse_head(head)
    body = bytearray()
    rd.read_exact(int(hget(hdrs, "content-length", "0")), time.monotonic() + 10, body.extend)
    return conn, int(start.split()[1]), bytes(body)


def serial_of(conn):
    return conn.getpeercert()["serialNumber"]


def need_openssl():
    if not OPENSSL:
        raise Skip("no openssl CLI")


# ---- certificates and TLS listeners ------------------------------------------------------------


@t.test("cert swapped in place + clawctl reload: new handshakes get it, an open TLS keep-alive connection goes on")
def _():
    need_openssl()
    pki = Pki()
    try:
        a = pki.leaf("a", ["a.test"])
        with Backend() as be:
            cfg = config(be, [tls_listener("web", free_port(), a)])
            with Clawd(cfg) as cd:
                ctx = ssl.create_default_context(cafile=pki.ca)
                old, status, _ = tls_get(ctx, cd.port, "a.test")
                eq(status, 200, "before")
                eq(serial_of(old), a[2], "first certificate")
                b = pki.leaf("a", ["a.test"], cn="a.test rotated")  # same paths, new key and serial
                reload_ok(cd)
                new, status, _ = tls_get(ctx, cd.port, "a.test")
                eq(status, 200, "after")
                eq(serial_of(new), b[2], "new handshake presents the new certificate")
                eq(dict(x[0] for x in new.getpeercert()["subject"])["commonName"], "a.test rotated",
                   "new subject")
                for i in range(3):
                    _, status, _ = tls_get(ctx, cd.port, "a.test", conn=old)
                    eq(status, 200, "request %d on the connection opened before the reload" % i)
                eq(serial_of(old), a[2], "the old connection kept its handshake")
                old.close()
                new.close()
                # tls.reload (certificates only) still works after a configuration reload.
                c = pki.leaf("a", ["a.test"])
                rc, out = ctl(cd, "tls", "reload")
                check(rc == 0 and "reloaded" in out, "clawctl tls reload: " + out)
                conn, status, _ = tls_get(ctx, cd.port, "a.test")
                eq(serial_of(conn), c[2], "tls reload after a config reload")
                conn.close()
    finally:
        pki.close()


@t.test("a bad key refuses the reload with the file and reason; the running certificate stays")
def _():
    need_openssl()
    pki = Pki()
    try:
        a = pki.leaf("a", ["a.test"])
        with Backend() as be:
            cfg = config(be, [tls_listener("web", free_port(), a)])
            with Clawd(cfg) as cd:
                ctx = ssl.create_default_context(cafile=pki.ca)
                # Loose permissions on the key.
                os.chmod(a[1], 0o644)
                reload_refused(cd, a[1], "chmod 600", "running certificates stay")
                os.chmod(a[1], 0o600)
                # A key that does not belong to the certificate (another leaf's).
                other = pki.leaf("other", ["o.test"])
                cfg["listeners"][0]["tls"]["certificates"][0]["key"] = other[1]
                cd.rewrite(cfg)
                reload_refused(cd, other[1], "listeners[0].tls.certificates[0].key")
                # A key file that is not PEM at all.
                junk = os.path.join(pki.dir, "junk.key")
                with open(junk, "w") as f:
                    f.write("not a key\n")
                os.chmod(junk, 0o600)
                cfg["listeners"][0]["tls"]["certificates"][0]["key"] = junk
                cd.rewrite(cfg)
                reload_refused(cd, junk)
                conn, status, _ = tls_get(ctx, cd.port, "a.test")
                eq(status, 200, "still serving")
                eq(serial_of(conn), a[2], "still the running certificate")
                conn.close()
                rc, out = ctl(cd, "--json", "status")
                check(json.loads(out)["reload_failures"] == 3, "three refusals counted: " + out)
    finally:
        pki.close()


@t.test("TLS listeners added, changed and removed by reload; sessions resume across the reload")
def _():
    need_openssl()
    pki = Pki()
    try:
        a = pki.leaf("a", ["a.test"])
        b = pki.leaf("b", ["b.test"])
        p1, p2 = free_port(), free_port()
        with Backend() as be:
            cfg = config(be, [tls_listener("one", p1, a)])
            with Clawd(cfg) as cd:
                ctx = ssl.create_default_context(cafile=pki.ca)
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is there right after the handshake
                conn, status, _ = tls_get(ctx, p1, "a.test")
                eq(status, 200)
                sess = conn.session
                conn.close()
                cfg["listeners"].append(tls_listener("two", p2, b))
                cd.rewrite(cfg)
                out = reload_ok(cd)
                check("1 listeners opened" in out, out)
                conn, status, _ = tls_get(ctx, p2, "b.test")
                eq((status, serial_of(conn)), (200, b[2]), "new TLS listener serves its certificate")
                conn.close()
                conn, status, _ = tls_get(ctx, p1, "a.test", session=sess)
                eq(status, 200)
                check(conn.session_reused, "a session from before the reload resumes (ticket keys kept)")
                conn.close()
                rc, out = ctl(cd, "--json", "tls", "status")
                names = [x["name"] for x in json.loads(out)["listeners"]]
                eq(sorted(names), ["one", "two"], "tls status follows the reload")
                # Listener one turns plain; two goes away.
                cfg["listeners"] = [{"name": "one", "address": "127.0.0.1:%d" % p1}]
                cd.rewrite(cfg)
                reload_ok(cd)
                eq(get(p1, "/x").status, 200, "listener one now speaks plain HTTP")
                wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", p2)) != 0, 5,
                         what="listener two closed")
                # And back to TLS on the same socket.
                cfg["listeners"] = [tls_listener("one", p1, b)]
                cd.rewrite(cfg)
                reload_ok(cd)
                conn, status, _ = tls_get(ctx, p1, "b.test")
                eq((status, serial_of(conn)), (200, b[2]), "listener one speaks TLS again")
                conn.close()
    finally:
        pki.close()


@t.test("TLS client loops during 20 reloads: no error")
def _():
    need_openssl()
    pki = Pki()
    try:
        a = pki.leaf("a", ["a.test"])
        with Backend() as be:
            cfg = config(be, [tls_listener("web", free_port(), a)])
            with Clawd(cfg) as cd:
                ctx = ssl.create_default_context(cafile=pki.ca)
                stop = threading.Event()
                errors, done = [], [0]

                def client(keepalive):
                    conn = None
                    while not stop.is_set():
                        try:
                            conn, status, _ = tls_get(ctx, cd.port, "a.test", conn=conn)
                            if status != 200:
                                errors.append("status %d" % status)
                            done[0] += 1
                            if not keepalive:
                                conn.close()
                                conn = None
                        except Exception as e:  # noqa: BLE001
                            errors.append(repr(e))
                            conn = None
                    if conn:
                        conn.close()

                th = [threading.Thread(target=client, args=(k,)) for k in (True, False)]
                for x in th:
                    x.start()
                try:
                    for i in range(20):
                        if i % 5 == 4:
                            pki.leaf("a", ["a.test"])
                        cfg["routes"][0]["match"]["path_prefix"] = "/" if i % 2 else "/"
                        cfg["routes"][0]["name"] = "all%d" % i
                        cd.rewrite(cfg)
                        reload_ok(cd)
                        time.sleep(0.05)
                finally:
                    stop.set()
                    for x in th:
                        x.join(30)
                eq(errors[:5], [], "client errors")
                check(done[0] > 20, "requests made: %d" % done[0])
    finally:
        pki.close()


# ---- auth, rate limits, tiers --------------------------------------------------------------------


def keys_create(cd, *extra):
    rc, out = ctl(cd, "--json", "keys", "create", "--name", "alice", "--tier", "free", *extra)
    check(rc == 0, "keys create: " + out)
    return json.loads(out)["key"]


def gated_config(be, state, routes, tier_rate="1000/s", tier_burst=1000):
    return config(be, [{"name": "web", "address": "127.0.0.1:%d" % free_port()}], routes=routes,
                  state_dir=state, tiers=[{"name": "free", "rate": tier_rate, "burst": tier_burst}])


@t.test("reload turns api_key auth on for a route: 401 without a key, keys work; scopes and tiers follow reloads")
def _():
    st = make_tmpdir("clawd-rl-gate-")
    try:
        with Backend() as be:
            api = {"name": "api", "match": {"path_prefix": "/api/"}, "upstream": "pool"}
            cfg = gated_config(be, st, [api, {"name": "open", "match": {"path_prefix": "/"},
                                              "upstream": "pool"}])
            del cfg["tiers"]
            with Clawd(cfg) as cd:
                eq(get(cd.port, "/api/x").status, 200, "no auth before the reload")
                cfg["tiers"] = [{"name": "free", "rate": "1000/s", "burst": 1000}]
                api["auth"] = {"type": "api_key", "header": "X-API-Key"}
                cd.rewrite(cfg)
                reload_ok(cd)
                r = get(cd.port, "/api/x")
                eq(r.status, 401, "no key after the reload")
                check("ApiKey" in (r.header("www-authenticate") or ""), "WWW-Authenticate: %r" % r.headers)
                eq(get(cd.port, "/open/x").status, 200, "the open route stays open")
                key = keys_create(cd)
                scoped = keys_create(cd, "--scopes", "api")
                eq(get(cd.port, "/api/x", headers=[("X-API-Key", key)]).status, 200, "a key works")
                eq(get(cd.port, "/api/x", headers=[("X-API-Key", "ocl_" + "a" * 64)]).status, 401,
                   "an unknown key does not")
                # A route added in front (indexes move) and one the scoped key may not call.
                cfg["routes"].insert(0, {"name": "other", "match": {"path_prefix": "/other/"},
                                         "upstream": "pool", "auth": "api_key"})
                cd.rewrite(cfg)
                reload_ok(cd)
                eq(get(cd.port, "/api/x", headers=[("X-API-Key", scoped)]).status, 200,
                   "scoped key on its route after routes moved")
                eq(get(cd.port, "/other/x", headers=[("X-API-Key", scoped)]).status, 403,
                   "scoped key outside its scopes")
                eq(get(cd.port, "/other/x", headers=[("X-API-Key", key)]).status, 200, "unscoped key")
                # The tier's rate tightened by reload applies to existing keys.
                cfg["tiers"] = [{"name": "free", "rate": "1/m", "burst": 2}]
                cd.rewrite(cfg)
                reload_ok(cd)
                codes = [get(cd.port, "/api/x", headers=[("X-API-Key", key)]).status for _ in range(4)]
                eq(codes, [200, 200, 429, 429], "the new tier rate applies")
                # And auth off again.
                del api["auth"]
                cfg["routes"] = [api]
                cd.rewrite(cfg)
                reload_ok(cd)
                eq(get(cd.port, "/api/x").status, 200, "auth removed by reload")
    finally:
        remove_tmpdir(st)


@t.test("a changed rate limit applies at once; an unchanged one keeps its buckets, wherever its route moved")
def _():
    st = make_tmpdir("clawd-rl-lim-")
    try:
        with Backend() as be:
            def route(name, burst):
                return {"name": name, "match": {"path_prefix": "/%s/" % name}, "upstream": "pool",
                        "rate_limit_headers": True,
                        "limits": [{"key": "ip", "rate": "1/m", "burst": burst}]}
            cfg = gated_config(be, st, [route("a", 3), route("b", 3)])
            del cfg["tiers"]
            with Clawd(cfg) as cd:
                for name in ("a", "b"):
                    for want in ("2", "1"):
                        r = get(cd.port, "/%s/x" % name)
                        eq((r.status, r.header("ratelimit-remaining")), (200, want), name)
                cfg["routes"] = [{"name": "new", "match": {"path_prefix": "/new/"}, "upstream": "pool"},
                                 route("b", 5), route("a", 3)]
                cd.rewrite(cfg)
                reload_ok(cd)
                r = get(cd.port, "/a/x")
                eq((r.status, r.header("ratelimit-remaining")), (200, "0"), "a: unchanged limit kept its bucket")
                eq(get(cd.port, "/a/x").status, 429, "a: then refused")
                r = get(cd.port, "/b/x")
                eq((r.status, r.header("ratelimit-remaining")), (200, "4"), "b: the new burst, a fresh bucket")
                # A limit added to a route that had none.
                cfg["routes"][0]["limits"] = [{"key": "ip", "rate": "1/m", "burst": 1}]
                cd.rewrite(cfg)
                reload_ok(cd)
                eq([get(cd.port, "/new/x").status for _ in range(2)], [200, 429], "new limit applies")
                rc, out = ctl(cd, "--json", "limits", "show", "--ip", "127.0.0.1")
                check(rc == 0, "limits show: " + out)
                rows = {x["route"]: x for x in json.loads(out)["routes"]}
                eq(sorted(rows), ["a", "b", "new"], "limits show follows the reload")
                eq(rows["a"]["remaining"], 0, "limits show reads the kept bucket")
    finally:
        remove_tmpdir(st)


t.main()
