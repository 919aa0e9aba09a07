#!/usr/bin/env python3
# selftests/e2e/test_upstream_tls.py — upstream TLS (issue #5): re-encryption to Python ssl backends, verification, SNI, mutual TLS, pooling, resumption, health checks, config errors.
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

from harness import (CLAWD, Backend, Clawd, Client, Tap, check, eq, free_port, make_tmpdir,
                     metrics_sample, metrics_scrape,
                     pattern_chunks, pattern_sha256, run_clawd, simple_config, to_yaml, wait_for)

t = Tap()
OPENSSL = shutil.which("openssl")
CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(os.path.dirname(CLAWD), "clawctl")


def sh(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return p.returncode, p.stdout.decode("utf-8", "replace")


class Pki:
    """Two CAs (the right one and a wrong one) and leaves made with openssl req / x509 in a temp dir."""

    def __init__(self):
        self.dir = make_tmpdir("clawd-uptls-")
        self.serial = 1
        self.ca, self.ca_key = self._ca("ca", "clawd upstream test CA")
        self.other_ca, self.other_ca_key = self._ca("other-ca", "some other CA")

    def _ca(self, name, cn):
        crt, key = self.path(name + ".pem"), self.path(name + ".key")
        rc, out = sh([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=" + cn])
        check(rc == 0, "make CA: " + out)
        return crt, key

    def path(self, name):
        return os.path.join(self.dir, name)

    def leaf(self, name, sans, ca=None, ca_key=None, client=False):
        """Writes name.pem / name.key (0600) signed by ca (default: the right CA); returns (cert, key)."""
        key, csr, crt, ext = (self.path(name + s) for s in (".key", ".csr", ".pem", ".ext"))
        rc, out = sh([OPENSSL, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", "/CN=" + name])
        check(rc == 0, "leaf key: " + out)
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join(sans) + "\n")
            f.write("extendedKeyUsage=" + ("clientAuth" if client else "serverAuth") + "\n")
        self.serial += 1
        rc, out = sh([OPENSSL, "x509", "-req", "-in", csr, "-CA", ca or self.ca,
                      "-CAkey", ca_key or self.ca_key, "-set_serial", str(self.serial),
                      "-out", crt, "-days", "30", "-extfile", ext])
        check(rc == 0, "sign leaf: " + out)
        os.chmod(key, 0o600)
        return crt, key


class TlsBackend(Backend):
    """The harness backend behind a Python ssl server socket; records handshakes, SNI, ALPN, client certs."""

    def __init__(self, cert, key, client_ca=None, **kw):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if client_ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(client_ca)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sni = []           # server names the clients sent (None when none)
        self.handshakes = 0     # completed TLS handshakes
        self.resumed = 0        # of which resumed a session
        self.alpn = []
        self.peer_cns = []      # client certificate CNs (mutual TLS)
        self.hs_errors = []
        self.ctx.sni_callback = self._on_sni
        super().__init__(**kw)

    def _on_sni(self, sslobj, name, ctx):
        with self.lock:
            self.sni.append(name)

    def _accept_loop(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.add(c)
            threading.Thread(target=self._tls_serve, args=(c,), daemon=True).start()

    def _tls_serve(self, raw):
        try:
            raw.settimeout(10)
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.lock:
                self.hs_errors.append(str(e))
                self.conns.discard(raw)
            raw.close()
            return
        with self.lock:
            self.conns.discard(raw)
            self.conns.add(s)
            self.handshakes += 1
            self.resumed += 1 if s.session_reused else 0
            self.alpn.append(s.selected_alpn_protocol())
            pc = s.getpeercert()
            if pc:
                self.peer_cns.append(dict(x[0] for x in pc["subject"]).get("commonName"))
        self._serve(s)


def up_tls_config(be, tls, **extra):
    cfg = simple_config(be, **extra)
    cfg["upstreams"][0]["tls"] = tls
    return cfg


scrape = metrics_scrape
sample = metrics_sample


def get_on(c, path, host="a.test"):
    c.send(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    return c.response()


if not OPENSSL:
    print("1..0 # SKIP no openssl CLI")
    raise SystemExit(0)
PKI = Pki()
SRV = PKI.leaf("backend", ["DNS:localhost", "IP:127.0.0.1", "DNS:api.internal"])
WRONG = PKI.leaf("impostor", ["DNS:localhost", "IP:127.0.0.1"], ca=PKI.other_ca, ca_key=PKI.other_ca_key)
CLIENT = PKI.leaf("clawd-client", ["DNS:clawd.internal"], client=True)


@t.test("requests reach a TLS backend verified against the CA; one TLS connection carries N keep-alive requests")
def _():
    with TlsBackend(*SRV) as be, Clawd(up_tls_config(be, {"enabled": True, "ca": PKI.ca})) as cd:
        for i in range(5):
            with Client(cd.port) as c:
                r = get_on(c, "/r%d" % i)
                eq(r.status, 200, "status of request %d" % i)
                eq(r.json()["target"], "/r%d" % i, "target the backend saw")
        eq(be.handshakes, 1, "TLS handshakes the backend saw for 5 requests")
        eq(be.requests, 5, "requests the backend saw")
        eq(be.alpn, ["http/1.1"], "ALPN negotiated")
        eq(be.sni, [None], "no SNI by default (the server is an IP address)")
        check(not be.hs_errors, "backend handshake errors: %r" % be.hs_errors)


@t.test("the configured sni is sent and the certificate is checked against it")
def _():
    tls = {"ca": PKI.ca, "sni": "api.internal"}
    with TlsBackend(*SRV) as be, Clawd(up_tls_config(be, tls)) as cd, Client(cd.port) as c:
        eq(get_on(c, "/sni").status, 200, "status")
        eq(be.sni, ["api.internal"], "SNI the backend received")
    # A name the certificate does not carry fails verification.
    tls = {"ca": PKI.ca, "sni": "db.internal"}
    with TlsBackend(*SRV) as be, Clawd(up_tls_config(be, tls)) as cd, Client(cd.port) as c:
        eq(get_on(c, "/sni").status, 502, "status with a name the certificate lacks")
        eq(be.sni, ["db.internal"], "SNI the backend received")
        check("certificate verification failed: hostname mismatch" in cd.stderr(),
              "log names the mismatch:\n" + cd.stderr())


@t.test("servers[].sni: each server gets its own name, sent and verified; others keep the pool's")
def _():
    only_b = PKI.leaf("backend-b", ["DNS:b.internal"])  # no IP, not api.internal
    with TlsBackend(*SRV) as a, TlsBackend(*only_b) as b:
        tls = {"ca": PKI.ca, "sni": "api.internal"}
        cfg = up_tls_config(a, tls)
        cfg["upstreams"][0]["keepalive"] = 0
        cfg["upstreams"][0]["servers"] = [a.addr, {"address": b.addr, "sni": "b.internal"}]
        with Clawd(cfg) as cd:
            for i in range(6):
                with Client(cd.port) as c:
                    eq(get_on(c, "/s%d" % i).status, 200, "status of request %d" % i)
            eq(set(a.sni), {"api.internal"}, "names server A received (the pool's)")
            eq(set(b.sni), {"b.internal"}, "names server B received (its own)")
            check(len(a.sni) >= 2 and len(b.sni) >= 2, "both servers served: %r %r" % (a.sni, b.sni))
        # A name B's certificate lacks fails verification for B alone.
        cfg["upstreams"][0]["servers"] = [{"address": b.addr, "sni": "c.internal"}]
        with Clawd(cfg) as cd, Client(cd.port) as c:
            eq(get_on(c, "/wrong").status, 502, "status when the server's own name is not in its certificate")
            check("hostname mismatch" in cd.stderr(), "log names the mismatch:\n" + cd.stderr())


@t.test("a backend certificate from another CA: 502, logged and counted as a verification failure")
def _():
    admin = free_port()
    cfg = up_tls_config(None, {"ca": PKI.ca}, admin={"address": "127.0.0.1:%d" % admin})
    with TlsBackend(*WRONG) as be:
        cfg["upstreams"][0]["servers"] = [be.addr]
        with Clawd(cfg) as cd, Client(cd.port) as c:
            r = get_on(c, "/x")
            eq(r.status, 502, "status")
            eq(be.requests, 0, "requests that reached the impostor")
            err = cd.stderr()
            check(re.search(r"upstream pool: server 127\.0\.0\.1:%d: TLS handshake failed: certificate "
                            r"verification failed: unable to get local issuer certificate" % be.port, err),
                  "log line with pool, server and reason:\n" + err)
            check("BEGIN" not in err and "PRIVATE" not in err, "no key material in the log")
            line = cd.wait_log(1)[0]
            eq(line.get("error"), "backend TLS handshake failed", "access log error")
            m = scrape(admin)
            eq(sample(m, "openclaw_upstream_tls_handshakes_total", upstream="pool", result="verify_failed"),
               1.0, "verify_failed counter")
            eq(sample(m, "openclaw_upstream_tls_handshakes_total", upstream="pool", result="ok"), 0.0,
               "ok counter")


@t.test("verify: off accepts the wrong-CA backend and says so at load")
def _():
    with TlsBackend(*WRONG) as be, Clawd(up_tls_config(be, {"ca": PKI.ca, "verify": "off"})) as cd:
        with Client(cd.port) as c:
            eq(get_on(c, "/insecure").status, 200, "status")
        check(re.search(r"upstreams\[0\]\.tls\.verify: off: upstream pool: backend certificates", cd.stderr()),
              "warning at load:\n" + cd.stderr())


@t.test("a failed handshake counts as a connect failure: the next server gets the request")
def _():
    with TlsBackend(*WRONG) as bad, TlsBackend(*SRV) as good:
        cfg = up_tls_config(bad, {"ca": PKI.ca})
        cfg["upstreams"][0]["servers"] = [bad.addr, good.addr]
        cfg["upstreams"][0]["connect_tries"] = 2
        with Clawd(cfg) as cd:
            for i in range(4):
                with Client(cd.port) as c:
                    eq(get_on(c, "/retry%d" % i).status, 200, "status of request %d" % i)
            eq(bad.requests, 0, "requests that reached the impostor")
            eq(good.requests, 4, "requests the good server answered")


@t.test("a backend that never answers the handshake: 504 after the connect timeout, counted as failed")
def _():
    with Backend() as plain:  # plain HTTP: it waits for a request head that a ClientHello never completes
        cfg = up_tls_config(plain, {"ca": PKI.ca})
        cfg["routes"][0]["timeouts"] = {"connect": "300ms"}
        with Clawd(cfg) as cd, Client(cd.port, timeout=10) as c:
            t0 = time.monotonic()
            eq(get_on(c, "/stall").status, 504, "status")
            took = time.monotonic() - t0
            check(0.25 <= took < 5, "answered after %.2fs" % took)
            eq(cd.wait_log(1)[0].get("error"), "backend connect timeout", "access log error")
            check("TLS handshake failed: timed out" in cd.stderr(), "log:\n" + cd.stderr())
        eq(plain.requests, 0, "requests the plain backend parsed")


@t.test("mutual TLS: the backend requires a client certificate; with cert/key it gets clawd's")
def _():
    with TlsBackend(*SRV, client_ca=PKI.ca) as be:
        with Clawd(up_tls_config(be, {"ca": PKI.ca})) as cd, Client(cd.port) as c:
            eq(get_on(c, "/nocert").status, 502, "status without a client certificate")
        eq(be.requests, 0, "requests without a client certificate")
        cert, key = CLIENT
        with Clawd(up_tls_config(be, {"ca": PKI.ca, "cert": cert, "key": key})) as cd, Client(cd.port) as c:
            eq(get_on(c, "/mtls").status, 200, "status with a client certificate")
        eq(be.peer_cns, ["clawd-client"], "client certificate the backend saw")


@t.test("sessions resume on new connections (keepalive 0), counted per pool")
def _():
    admin = free_port()
    with TlsBackend(*SRV) as be:
        cfg = up_tls_config(be, {"ca": PKI.ca}, admin={"address": "127.0.0.1:%d" % admin})
        cfg["upstreams"][0]["keepalive"] = 0
        with Clawd(cfg) as cd:
            for i in range(4):
                with Client(cd.port) as c:
                    eq(get_on(c, "/res%d" % i).status, 200, "status of request %d" % i)
            eq(be.handshakes, 4, "one handshake per request without pooling")
            check(be.resumed >= 2, "resumed handshakes the backend saw: %d of 4" % be.resumed)
            m = scrape(admin)
            eq(sample(m, "openclaw_upstream_tls_handshakes_total", upstream="pool", result="ok"), 4.0,
               "ok counter")
            eq(sample(m, "openclaw_upstream_tls_resumptions_total", upstream="pool"), float(be.resumed),
               "resumptions counter")
            # This host's kernel has no kTLS: every backend connection stays in userspace, counted.
            eq(sample(m, "openclaw_upstream_ktls_total", upstream="pool", state="off"), 4.0,
               "kTLS-off connections")
            eq(sample(m, "openclaw_upstream_ktls_total", upstream="pool", state="on"), 0.0,
               "kTLS-on connections")
            eq(sample(m, "openclaw_upstream_ktls_failures_total", upstream="pool", reason="install"), 0.0,
               "kTLS install failures")
            err = cd.stderr()
            eq(len(re.findall(r"upstream pool: TLS to backends in userspace: no kTLS in this kernel", err)), 1,
               "the pool's record layer logged once:\n" + err)


@t.test("ktls: off on the pool: userspace TLS, said in the log, counted as off")
def _():
    admin = free_port()
    with TlsBackend(*SRV) as be:
        cfg = up_tls_config(be, {"ca": PKI.ca, "ktls": "off"}, admin={"address": "127.0.0.1:%d" % admin})
        with Clawd(cfg) as cd:
            for i in range(3):
                with Client(cd.port) as c:
                    r = get_on(c, "/off%d" % i)
                    eq(r.status, 200, "status of request %d" % i)
                    eq(r.json()["target"], "/off%d" % i, "target the backend saw")
            eq(be.handshakes, 1, "one pooled TLS connection")
            m = scrape(admin)
            eq(sample(m, "openclaw_upstream_ktls_total", upstream="pool", state="off"), 1.0,
               "kTLS-off connections (one, pooled)")
            eq(sample(m, "openclaw_upstream_ktls_total", upstream="pool", state="on"), 0.0,
               "kTLS-on connections")
            check("upstream pool: TLS to backends in userspace (ktls: off)" in cd.stderr(),
                  "log line:\n" + cd.stderr())
            # clawctl tls status shows the pool (no TLS listener here: the upstream part alone).
            sock = os.path.join(cd.dir, "ctl.sock")
            p = subprocess.run([CLAWCTL, "--socket", sock, "--json", "tls", "status"],
                               capture_output=True, text=True, timeout=30)
            eq(p.returncode, 0, "clawctl --json tls status: " + p.stderr)
            st = json.loads(p.stdout)
            eq(st["listeners"], [], "no TLS listeners")
            ups = [u for u in st["upstreams"] if u["name"] == "pool"]
            eq(len(ups), 1, "pool in tls status: %r" % st["upstreams"])
            eq((ups[0]["handshakes"], ups[0]["userspace_connections"], ups[0]["ktls_connections"]),
               (1, 1, 0), "handshakes, userspace and kTLS connections of the pool")
            p = subprocess.run([CLAWCTL, "--socket", sock, "tls", "status"],
                               capture_output=True, text=True, timeout=30)
            check(p.returncode == 0 and "upstream pool: handshakes 1 ok" in p.stdout
                  and "connections 0 kTLS, 1 userspace" in p.stdout, "table:\n" + p.stdout + p.stderr)


@t.test("a 10 MiB body each way through a TLS upstream hashes equal")
def _():
    n = 10 << 20
    with TlsBackend(*SRV) as be:
        cfg = up_tls_config(be, {"ca": PKI.ca})
        cfg["routes"][0]["max_body"] = 0
        with Clawd(cfg) as cd, Client(cd.port, timeout=60) as c:
            c.send(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % n)
            for chunk in pattern_chunks(n):
                c.send(chunk)
            r = c.response(timeout=60)
            eq(r.status, 200, "upload status")
            eq(r.json()["body_len"], n, "bytes the backend got")
            eq(r.json()["body_sha256"], pattern_sha256(n), "sha256 the backend computed")
            h = hashlib.sha256()
            got = [0]

            def sink(d):
                h.update(d)
                got[0] += len(d)
            c.send(b"GET /down?size=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % n)
            r = c.response(timeout=60, sink=sink)
            eq(r.status, 200, "download status")
            eq(got[0], n, "bytes downloaded")
            eq(h.hexdigest(), pattern_sha256(n), "sha256 of the download")
        eq(be.handshakes, 1, "both directions on one TLS connection")


def servers_state(cd):
    p = subprocess.run([CLAWCTL, "--socket", os.path.join(cd.dir, "ctl.sock"), "--json", "backends", "list"],
                       capture_output=True, timeout=10)
    check(p.returncode == 0, "clawctl backends list: %s" % p.stderr.decode())
    out = json.loads(p.stdout)
    return {s["address"]: s for pool in out["pools"] for s in pool["servers"]}


@t.test("health checks speak TLS to a TLS pool: an http check passes, the wrong CA takes the server down")
def _():
    with TlsBackend(*SRV) as good, TlsBackend(*WRONG) as bad:
        cfg = up_tls_config(good, {"ca": PKI.ca})
        cfg["upstreams"][0]["servers"] = [good.addr, bad.addr]
        cfg["upstreams"][0]["health"] = {"type": "http", "path": "/healthz", "interval": "300ms",
                                         "timeout": "300ms", "rise": 1, "fall": 1}
        with Clawd(cfg) as cd:
            wait_for(lambda: any(r.path == "/healthz" for r in good.seen), 5, what="a check on the good server")
            st = wait_for(lambda: (lambda m: m if m[bad.addr]["state"] == "down" and
                                   m[good.addr].get("check_last") else None)(servers_state(cd)),
                          5, what="the wrong-CA server down and the good one checked")
            check(st[bad.addr]["check_last"].startswith("TLS: certificate verification failed"),
                  "check detail: %r" % st[bad.addr]["check_last"])
            eq(st[good.addr]["state"], "up", "the good server's state")
            eq(st[good.addr]["check_last"], "status 200", "the good server's check detail")
            eq(bad.requests, 0, "requests that reached the impostor")
            for i in range(4):
                with Client(cd.port) as c:
                    eq(get_on(c, "/after%d" % i).status, 200, "status of request %d" % i)
            eq(bad.handshakes, 0, "handshakes the impostor completed")


def check_config(cfg_text, want):
    d = make_tmpdir("clawd-uptls-cfg-")
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        f.write(cfg_text)
    rc, out, err = run_clawd(["--check", "-c", p])
    check(rc != 0, "clawd --check accepted:\n" + cfg_text)
    check(re.search(want, err), "error %r not in:\n%s" % (want, err))


@t.test("config errors name FILE:LINE: KEY: missing ca, unreadable ca, loose key, bad verify, splice")
def _():
    loose_dir = make_tmpdir("clawd-uptls-loose-")
    loose = os.path.join(loose_dir, "client.key")
    shutil.copy(CLIENT[1], loose)
    os.chmod(loose, 0o644)
    notpem = os.path.join(loose_dir, "ca.txt")
    with open(notpem, "w") as f:
        f.write("this is not a certificate\n")

    def cfg(tls, mode=None):
        c = simple_config("127.0.0.1:1")
        c["upstreams"][0]["tls"] = tls
        if mode:
            c["routes"][0]["mode"] = mode
        c["control"] = {"socket": "off"}
        return to_yaml(c) + "\n"
    check_config(cfg({"ca": "/nonexistent/ca.pem"}),
                 r"c\.yaml:\d+: upstreams\[0\]\.tls\.ca: /nonexistent/ca\.pem: No such file or directory")
    check_config(cfg({"ca": notpem}), r"c\.yaml:\d+: upstreams\[0\]\.tls\.ca: .*ca\.txt: no PEM certificate")
    check_config(cfg({"ca": PKI.ca, "cert": CLIENT[0], "key": loose}),
                 r"c\.yaml:\d+: upstreams\[0\]\.tls\.key: .*client\.key: private key is accessible to group or others \(mode 0644\)")
    check_config(cfg({"ca": PKI.ca, "cert": CLIENT[0]}), r"c\.yaml:\d+: upstreams\[0\]\.tls\.cert: mutual TLS needs both")
    check_config(cfg({"ca": PKI.ca, "verify": "maybe"}),
                 r"c\.yaml:\d+: upstreams\[0\]\.tls\.verify: expected on or off, got \"maybe\"")
    check_config(cfg({"ca": PKI.ca, "sni": "10.0.0.1"}), r"c\.yaml:\d+: upstreams\[0\]\.tls\.sni: .*not a DNS name")
    check_config(cfg({"ca": PKI.ca}, mode="splice"),
                 r"c\.yaml:\d+: routes\[0\]\.mode: splice mode cannot be used with upstream \"pool\": it has tls")
    check_config(cfg({"ca": PKI.ca, "bogus": 1}), r"c\.yaml:\d+: upstreams\[0\]\.tls\.bogus: unknown key")
    plain = simple_config("127.0.0.1:1")
    plain["upstreams"][0]["servers"] = [{"address": "127.0.0.1:1", "sni": "a.internal"}]
    plain["control"] = {"socket": "off"}
    check_config(to_yaml(plain) + "\n",
                 r"c\.yaml:\d+: upstreams\[0\]\.servers\[0\]\.sni: only for a pool with tls")
    bad = simple_config("127.0.0.1:1")
    bad["upstreams"][0]["servers"] = [{"address": "127.0.0.1:1", "sni": "10.1.1.1"}]
    bad["upstreams"][0]["tls"] = {"ca": PKI.ca}
    bad["control"] = {"socket": "off"}
    check_config(to_yaml(bad) + "\n", r"c\.yaml:\d+: upstreams\[0\]\.servers\[0\]\.sni: .*not a DNS name")
    check_config(cfg({"ca": PKI.ca, "ktls": "on"}),
                 r"c\.yaml:\d+: upstreams\[0\]\.tls\.ktls: expected auto or off, got \"on\"")
    # And the good one passes.
    d = make_tmpdir("clawd-uptls-cfg-")
    p = os.path.join(d, "ok.yaml")
    with open(p, "w") as f:
        f.write(cfg({"ca": PKI.ca, "cert": CLIENT[0], "key": CLIENT[1], "sni": "api.internal",
                     "min_version": "1.3", "alpn": "http/1.1", "session_reuse": False, "ktls": "auto"}))
    rc, out, err = run_clawd(["--check", "-c", p])
    eq(rc, 0, "clawd --check on a good config (%s)" % err)


t.main()
