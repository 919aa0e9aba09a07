#!/usr/bin/env python3
# selftests/e2e/test_sni_route.py — SNI routing of a TLS-passthrough tcp listener: exact, wildcard and default routes, end-to-end TLS, refusals, slow and broken ClientHellos, reload.
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

from harness import *

t = Tap()

PIN_BASE = "/sys/fs/bpf/openclaw-e2e-sni-%d" % os.getpid()
OPENSSL = shutil.which("openssl")
CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(os.path.dirname(CLAWD), "clawctl")
CERTS = None  # temp dir with one self-signed certificate per backend name


def need_env():
    if os.geteuid() != 0 or not os.path.isdir("/sys/fs/bpf"):
        raise Skip("needs root and a bpf file system")
    if not OPENSSL:
        raise Skip("no openssl CLI")


def cert_for(name):
    """(cert path, key path, DER bytes) of a self-signed certificate for name (made once)."""
    global CERTS
    if CERTS is None:
        CERTS = make_tmpdir("clawd-sni-certs-")
    crt, key = os.path.join(CERTS, name + ".crt"), os.path.join(CERTS, name + ".key")
    if not os.path.exists(crt):
        p = subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                            "-days", "2", "-subj", "/CN=" + name, "-addext",
                            "subjectAltName=DNS:" + name],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        check(p.returncode == 0, "openssl req: " + p.stdout.decode())
    with open(crt) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return crt, key, der


class TlsBackend:
    """
    A TLS server thread: after the handshake it reads one line and answers
    "NAME sni=<name the client sent> got=<line>", then echoes until EOF.
    accepted counts TCP connections (a route never taken leaves it at 0).
    """

    def __init__(self, name):
        self.name = name
        crt, key, self.der = cert_for(name)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(crt, key)
        self.ctx.sni_callback = self._sni
        self.accepted = 0
        self.lock = threading.Lock()
        self.conns = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.addr = "127.0.0.1:%d" % self.ls.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _sni(self, sobj, name, ctx):
        sobj.sni_seen = name

    def _loop(self):
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(20)
            s = self.ctx.wrap_socket(c, server_side=True)
            line = b""
            while not line.endswith(b"\n"):
                d = s.recv(4096)
                if not d:
                    return
                line += d
            sni = getattr(s, "sni_seen", None)
            s.sendall(("%s sni=%s got=%s\n" % (self.name, sni, line.decode().strip())).encode())
            while True:
                d = s.recv(4096)
                if not d:
                    break
                s.sendall(d)
            s.close()
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.stop.set()
        try:
            self.ls.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test compares the certificate itself
    return ctx


def tls_connect(port, sni):
    """A TLS session through clawd; returns (ssl socket, the peer's certificate DER)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = client_ctx().wrap_socket(raw, server_hostname=sni)
    return s, s.getpeercert(binary_form=True)


def ask(port, sni, msg="hello"):
    """One exchange: returns (backend's answer line, peer certificate DER)."""
    s, der = tls_connect(port, sni)
    try:
        s.sendall(msg.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(4096)
            if not d:
                break
            buf += d
        return buf.decode().strip(), der
    finally:
        s.close()


def refused(port, sni=None, raw=None):
    """True when clawd closes the connection without a TLS session (for a ClientHello or raw bytes)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if raw is not None:
            c.sendall(raw)
            try:
                return c.recv(100) == b""
            except ConnectionResetError:
                return True
        s = client_ctx().wrap_socket(c, server_hostname=sni)
        s.close()
        return False
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
        return True
    except OSError as e:
        raise AssertionError("unexpected error: %r" % e)
    finally:
        c.close()


def sni_cfg(backends, routes, client_header="2s"):
    """One passthrough listener "tls"; routes: [(name, upstream, [sni...] or None)]."""
    cfg = {
        "workers": 1,
        "listeners": [{"name": "tls", "address": "127.0.0.1:%d" % free_port()}],
        "admin": {"address": "127.0.0.1:%d" % free_port()},
        "timeouts": {"client_header": client_header},
        "upstreams": [{"name": n, "servers": [b.addr]} for n, b in backends.items()],
        "routes": [],
        "splice": {"pin_dir": "%s/%d" % (PIN_BASE, free_port())},
    }
    for name, up, sni in routes:
        r = {"name": name, "upstream": up, "listeners": ["tls"], "mode": "tcp"}
        if sni:
            r["match"] = {"sni": sni}
        cfg["routes"].append(r)
    return cfg


ROUTES3 = [("exact", "a", ["a.test", "api.a.test"]), ("wild", "b", ["*.wild.test"]),
           ("dflt", "c", None)]


def sni_count(cd, result):
    v = metrics_sample(metrics_scrape(cd), "openclaw_tcp_sni_total", listener="tls", result=result)
    return int(v or 0)


def ctl(cd, cmd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(os.path.join(cd.dir, "ctl.sock"))
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(65536)
            if not d:
                break
            buf += d
        return json.loads(buf)
    finally:
        s.close()


def clawctl(cd, *args):
    p = subprocess.run([CLAWCTL, "--socket", os.path.join(cd.dir, "ctl.sock")] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def backends3():
    return {"a": TlsBackend("a.test"), "b": TlsBackend("b.wild.test"), "c": TlsBackend("c.default")}


def close_all(bes):
    for b in bes.values():
        b.close()


@t.test("exact name, one-label wildcard and default route; the TLS session is the backend's, end to end")
def _():
    need_env()
    bes = backends3()
    try:
        with Clawd(sni_cfg(bes, ROUTES3)) as cd:
            cases = [("a.test", "a"), ("API.A.test", "a"), ("x.wild.test", "b"),
                     ("a.b.wild.test", "c"), ("wild.test", "c"), ("other.test", "c"), (None, "c")]
            for sni, want in cases:
                line, der = ask(cd.port, sni)
                check(line.startswith(bes[want].name + " "), "%s: reached %r, want %s" % (sni, line, want))
                eq(der, bes[want].der, "%s: certificate seen by the client" % sni)
                # The backend's own TLS stack read the name: the ClientHello arrived intact.
                check(("sni=%s " % sni).lower() in line.lower(), "%s: backend saw %r" % (sni, line))
            wait_for(lambda: sni_count(cd, "routed") == 3, what="3 routed in the metric")
            eq(sni_count(cd, "default"), 4, "default in the metric")
            # One line per routed connection (the harness's start-up probe adds an unrouted one).
            tcp = wait_for(lambda: (lambda l: l if len(l) == len(cases) else None)(
                [e for e in cd.log_lines() if e.get("method") == "TCP" and e.get("route")]),
                what="%d access log lines" % len(cases))
            eq(sorted(e["path"] for e in tcp),
               sorted([(s or "*").lower() for s, _ in cases]), "access log paths")
            check(any(e["path"] == "x.wild.test" and e["route"] == "wild" for e in tcp), repr(tcp))
    finally:
        close_all(bes)


@t.test("a routed connection is spliced in the kernel and listed with its route and name")
def _():
    need_env()
    bes = backends3()
    try:
        with Clawd(sni_cfg(bes, ROUTES3)) as cd:
            s, der = tls_connect(cd.port, "q.wild.test")
            try:
                s.sendall(b"first\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    buf += s.recv(4096)
                check(buf.startswith(b"b.wild.test "), repr(buf))
                lst = wait_for(lambda: ctl(cd, "splice.list")["connections"], what="listed")
                eq(len(lst), 1, "listed connections")
                eq(lst[0]["route"], "wild", "route in splice.list")
                eq(lst[0]["sni"], "q.wild.test", "sni in splice.list")
                eq(lst[0]["path"], "kernel", "spliced by the kernel")
                rc, out = clawctl(cd, "splice", "list")
                check(rc == 0 and "q.wild.test" in out and "kernel" in out, "clawctl splice list: %s" % out)
                # Bytes after the hand-off go through the kernel path and come back intact.
                payload = os.urandom(200000).hex().encode() + b"\n"
                s.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    d = s.recv(65536)
                    if not d:
                        break
                    got += d
                eq(got, payload, "echo through the spliced TLS session")
                st = ctl(cd, "splice.stats")
                check(st["spliced"] >= 1, "spliced counter: %r" % st)
                eq(st["sni"]["tls"]["routed"], 1, "splice.stats sni routed")
            finally:
                s.close()
            wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], what="connection gone")
    finally:
        close_all(bes)


@t.test("no default route: an unknown name, no name and plain text are closed, counted, never reach a backend")
def _():
    need_env()
    bes = backends3()
    try:
        routes = [("exact", "a", ["a.test"]), ("wild", "b", ["*.wild.test"])]
        with Clawd(sni_cfg(bes, routes)) as cd:
            nm0, mal0 = sni_count(cd, "no_match"), sni_count(cd, "malformed")
            check(refused(cd.port, "other.test"), "unknown name refused")
            check(refused(cd.port, None), "no name refused")
            check(refused(cd.port, raw=b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"), "plain text refused")
            wait_for(lambda: sni_count(cd, "no_match") == nm0 + 2, what="no_match counted twice")
            eq(sni_count(cd, "malformed"), mal0 + 1, "malformed counted")
            eq([b.accepted for b in bes.values()], [0, 0, 0], "backend connections")
            log = cd.wait_log(3)
            errs = [(e.get("path"), e.get("error")) for e in log]
            check(("other.test", "sni: no route for the server name") in errs, repr(errs))
            check(("*", "sni: malformed ClientHello") in errs, repr(errs))
            # Logged once per listener and reason, not per connection.
            check(refused(cd.port, "other2.test"), "second unknown name refused")
            wait_for(lambda: sni_count(cd, "no_match") == nm0 + 3, what="no_match counted")
            eq(cd.stderr().count("matches no route"), 1, "no_match warnings in the log")
            # A listed name still works.
            line, der = ask(cd.port, "a.test")
            check(line.startswith("a.test "), line)
    finally:
        close_all(bes)


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_hello(sni):
    """The first flight of a real TLS client (bytes), and its SSLObject and BIOs to go on with."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read(), obj, inc, out


def finish_handshake(sock, obj, inc, out):
    """Runs the rest of a MemoryBIO handshake over sock; returns the peer certificate DER."""
    sock.settimeout(10)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = out.read()
            if pending:
                sock.sendall(pending)
            d = sock.recv(65536)
            check(d, "connection closed during the handshake")
            inc.write(d)
    pending = out.read()
    if pending:
        sock.sendall(pending)
    return obj.getpeercert(binary_form=True)


def bio_exchange(sock, obj, inc, out, msg):
    obj.write(msg)
    sock.sendall(out.read())
    buf = b""
    while not buf.endswith(b"\n"):
        try:
            buf += obj.read(4096)
        except ssl.SSLWantReadError:
            d = sock.recv(65536)
            check(d, "closed before the answer")
            inc.write(d)
    return buf.decode()


@t.test("a ClientHello sent in 1-50 byte pieces with pauses still routes by its name")
def _():
    need_env()
    bes = backends3()
    rnd = random.Random(8)
    try:
        with Clawd(sni_cfg(bes, ROUTES3, client_header="5s")) as cd:
            for sni, want in [("api.a.test", "a"), ("z.wild.test", "b")]:
                hello, obj, inc, out = client_hello(sni)
                check(len(hello) > 100, "ClientHello of %d bytes" % len(hello))
                s = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    off, pieces = 0, 0
                    while off < len(hello):
                        n = rnd.randint(1, 50)
                        s.sendall(hello[off:off + n])
                        off += n
                        pieces += 1
                        time.sleep(rnd.uniform(0.001, 0.01))
                    der = finish_handshake(s, obj, inc, out)
                    eq(der, bes[want].der, "%s: certificate after %d pieces" % (sni, pieces))
                    line = bio_exchange(s, obj, inc, out, b"slow\n")
                    check(line.startswith(bes[want].name + " sni=%s got=slow" % sni), line)
                finally:
                    s.close()
            eq(bes["c"].accepted, 0, "the default backend was never used")
    finally:
        close_all(bes)


@t.test("half a ClientHello and silence: closed after timeouts.client_header, counted; shutdown closes a peek at once")
def _():
    need_env()
    bes = backends3()
    try:
        with Clawd(sni_cfg(bes, ROUTES3, client_header="1s")) as cd:
            to0 = sni_count(cd, "timeout")
            hello, _, _, _ = client_hello("a.test")
            s = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
            cpu0 = cpu_seconds(cd.pid)
            try:
                s.sendall(hello[:len(hello) // 2])
                t0 = time.monotonic()
                try:
                    eq(s.recv(10), b"", "closed by clawd")
                except ConnectionResetError:
                    pass
                took = time.monotonic() - t0
            finally:
                s.close()
            check(0.7 <= took <= 6, "closed after %.2fs, want about 1 s" % took)
            # SO_RCVLOWAT keeps the level-triggered poll asleep on the unconsumed half.
            spent = cpu_seconds(cd.pid) - cpu0
            check(spent < 0.4 * took, "clawd used %.2f s of CPU in %.2f s of waiting" % (spent, took))
            wait_for(lambda: sni_count(cd, "timeout") == to0 + 1, what="timeout counted")
            eq([b.accepted for b in bes.values()], [0, 0, 0], "backend connections")
            wait_for(lambda: any(e.get("error") == "sni: ClientHello timeout" and e.get("bytes_in") > 0
                                 for e in cd.log_lines()), what="access log line of the timeout")
            # A client that sends half and closes is counted as closed, not routed.
            cl0 = sni_count(cd, "closed")
            c = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
            c.sendall(hello[:20])
            c.close()
            wait_for(lambda: sni_count(cd, "closed") == cl0 + 1, what="closed counted")
        # A drain closes connections still peeking instead of waiting for their timeout.
        with Clawd(sni_cfg(bes, ROUTES3, client_header="60s"), stop_timeout=30) as cd:
            s = socket.create_connection(("127.0.0.1", cd.port), timeout=10)
            s.sendall(hello[:30])
            time.sleep(0.2)
            took = cd.stop()
            s.close()
            check(took < 5, "stopped in %.2fs with a connection peeking" % took)
    finally:
        close_all(bes)


@t.test("reload: a new SNI map routes new connections, open ones keep theirs; a bad one is refused")
def _():
    need_env()
    bes = backends3()
    try:
        cfg = sni_cfg(bes, ROUTES3)
        with Clawd(cfg) as cd:
            old, _ = tls_connect(cd.port, "a.test")
            old.sendall(b"before\n")
            buf = b""
            while not buf.endswith(b"\n"):
                buf += old.recv(4096)
            check(buf.startswith(b"a.test "), repr(buf))
            # Swap: a.test now goes to c, the wildcard to a, the default to b.
            cfg2 = dict(cfg)
            cfg2["routes"] = sni_cfg(bes, [("exact", "c", ["a.test"]), ("wild", "a", ["*.wild.test"]),
                                           ("dflt", "b", None)])["routes"]
            cd.rewrite(cfg2)
            rc, out = clawctl(cd, "reload")
            check(rc == 0 and "reloaded" in out, "reload: %d %s" % (rc, out))
            line, der = ask(cd.port, "a.test")
            check(line.startswith("c.default "), "a.test after the reload: " + line)
            eq(der, bes["c"].der, "certificate after the reload")
            line, _ = ask(cd.port, "k.wild.test")
            check(line.startswith("a.test "), "wildcard after the reload: " + line)
            line, _ = ask(cd.port, None)
            check(line.startswith("b.wild.test "), "default after the reload: " + line)
            # The connection opened before the reload still runs to its old backend.
            old.sendall(b"still-there\n")
            buf = b""
            while not buf.endswith(b"still-there\n"):
                d = old.recv(4096)
                check(d, "old connection closed by the reload")
                buf += d
            old.close()
            # A bad map (the same name twice) is refused; the running one stays.
            cfg3 = dict(cfg2)
            cfg3["routes"] = sni_cfg(bes, [("exact", "c", ["a.test"]), ("wild", "a", ["*.wild.test", "a.test"]),
                                           ("dflt", "b", None)])["routes"]
            cd.rewrite(cfg3)
            rc, out = clawctl(cd, "reload")
            eq(rc, 1, "bad reload exit status")
            check(":" in out and "routes[1].match.sni[1]" in out and "already routed" in out, out)
            line, _ = ask(cd.port, "a.test")
            check(line.startswith("c.default "), "a.test after a refused reload: " + line)
            wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], what="connections gone")
    finally:
        close_all(bes)


@t.test("bad SNI configs are refused with FILE:LINE: KEY: reason")
def _():
    need_env()
    d = make_tmpdir()
    try:
        base = {
            "listeners": [{"name": "tls", "address": "127.0.0.1:%d" % free_port()},
                          {"name": "web", "address": "127.0.0.1:%d" % free_port()}],
            "upstreams": [{"name": "a", "servers": ["127.0.0.1:9"]}],
        }
        cases = [
            ([{"upstream": "a", "listeners": ["web"], "match": {"sni": ["a.test"]}}],
             r"routes\[0\]\.match\.sni: only a tcp route matches the TLS server name"),
            ([{"upstream": "a", "listeners": ["tls"], "mode": "tcp", "match": {"path": "/x"}}],
             r"routes\[0\]\.match\.path: a tcp route matches by listener and match\.sni only"),
            ([{"upstream": "a", "listeners": ["tls"], "mode": "tcp", "match": {"sni": ["bad_name!"]}}],
             r"routes\[0\]\.match\.sni\[0\]: \"bad_name!\" is not a valid server name"),
            ([{"upstream": "a", "listeners": ["tls"], "mode": "tcp", "match": {"sni": ["x.test"]}},
              {"upstream": "a", "listeners": ["tls"], "mode": "tcp", "match": {"sni": ["X.test"]}}],
             r"routes\[1\]\.match\.sni\[0\]: \"x\.test\" already routed by tcp route \"route1\""),
            ([{"upstream": "a", "listeners": ["tls"], "mode": "tcp"},
              {"upstream": "a", "listeners": ["tls"], "mode": "tcp"}],
             r"routes\[1\]\.listeners: listener \"tls\" already has default tcp route \"route1\""),
        ]
        for i, (routes, want) in enumerate(cases):
            cfg = dict(base)
            cfg["routes"] = routes
            path = os.path.join(d, "bad%d.yaml" % i)
            with open(path, "w") as f:
                f.write(to_yaml(cfg) + "\n")
            rc, out, err = run_clawd(["--check", "-c", path])
            eq(rc, 1, "case %d exit status" % i)
            check(re.search(re.escape(path) + r":\d+: " + want, err), "case %d: %s" % (i, err))
    finally:
        remove_tmpdir(d)


try:
    t.main()
finally:
    shutil.rmtree(PIN_BASE, ignore_errors=True)
    if CERTS:
        remove_tmpdir(CERTS)
