#!/usr/bin/env python3
# selftests/e2e/test_tls.py — TLS termination: versions, ciphers, SNI, ALPN, resumption, bad input, key permissions, reload, big bodies.
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time

from harness import *

t = Tap()
CLAWCTL = os.path.join(os.path.dirname(CLAWD), "clawctl")
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")


def sh(args, input=None, timeout=20):
    p = subprocess.run(args, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


class Pki:
    """A test CA and leaf certificates made with the openssl CLI in a temp dir."""

    def __init__(self):
        self.dir = make_tmpdir("clawd-tls-")
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.serial = 1
        rc, out = sh([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "30",
                      "-subj", "/CN=clawd test CA"])
        check(rc == 0, "make CA: " + out)

    def leaf(self, name, names, kind="ec", days=30):
        """Writes name.pem / name.key (0600); returns (cert, key)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" \
            else ["-newkey", "rsa:2048"]
        rc, out = sh([OPENSSL, "req"] + newkey + ["-nodes", "-keyout", key, "-out", csr,
                                                  "-subj", "/CN=" + names[0]])
        check(rc == 0, "leaf key: " + out)
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join("DNS:" + n for n in names) + "\n")
        self.serial += 1
        rc, out = sh([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-set_serial", str(self.serial), "-out", crt, "-days", str(days),
                      "-extfile", ext])
        check(rc == 0, "sign leaf: " + out)
        os.chmod(key, 0o600)
        return crt, key


def tls_config(be, certs, **tls_extra):
    cfg = simple_config(be)
    tls = {"certificates": [{"cert": c, "key": k} for c, k in certs]}
    tls.update(tls_extra)
    cfg["listeners"][0]["tls"] = tls
    return cfg


def s_client(port, *args, input=b"", timeout=15):
    return sh([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
              input=input, timeout=timeout)


def ctl(cd, *args):
    return sh([CLAWCTL, "--socket", os.path.join(cd.dir, "ctl.sock")] + list(args))


def client_ctx(pki):
    ctx = ssl.create_default_context(cafile=pki.ca)
    return ctx


def tls_get(ctx, port, host, path="/", conn=None):
    """One GET over (a new or the given) TLS connection; returns (conn, status, body)."""
    if conn is None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn = ctx.wrap_socket(raw, server_hostname=host)
    conn.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    rd = Reader(conn, timeout=10)
    head = rd.read_until(b"\r\n\r\n", time.monotonic() + 10)
    start, headers = parse_head(head)
    status = int(start.split()[1])
    body = bytearray()
    n = int(hget(headers, "content-length", "0"))
    rd.read_exact(n, time.monotonic() + 10, body.extend)
    return conn, status, bytes(body)


if not OPENSSL:
    print("1..0 # SKIP no openssl CLI")
    raise SystemExit(0)
PKI = Pki()


@t.test("TLS 1.3 and TLS 1.2 handshakes with curl --cacert; X-Forwarded-Proto is https")
def _():
    if not CURL:
        raise Skip("no curl")
    a = PKI.leaf("a", ["a.test", "*.a.test"])
    with Backend() as be, Clawd(tls_config(be, [a])) as cd:
        for ver in (["--tlsv1.3"], ["--tlsv1.2", "--tls-max", "1.2"]):
            rc, out = sh([CURL, "-sS", "--cacert", PKI.ca, "--resolve", "a.test:%d:127.0.0.1" % cd.port,
                          "-w", "\n%{http_code} %{ssl_verify_result}"] + ver +
                         ["https://a.test:%d/hello" % cd.port])
            check(rc == 0, "curl %s failed: %s" % (ver, out))
            eq(out.rsplit("\n", 1)[1], "200 0", "curl %s status and verify" % ver)
            check('"x-forwarded-proto", "https"' in out.lower(), "proto https upstream: " + out[:400])


@t.test("s_client negotiates TLSv1.3 by default and TLSv1.2 when asked")
def _():
    a = PKI.leaf("a", ["a.test"])
    with Backend() as be, Clawd(tls_config(be, [a])) as cd:
        rc, out = s_client(cd.port, "-servername", "a.test", "-CAfile", PKI.ca)
        check("Protocol  : TLSv1.3" in out or "New, TLSv1.3" in out, "1.3: " + out[-800:])
        check("Verify return code: 0 (ok)" in out, "verified: " + out[-400:])
        rc, out = s_client(cd.port, "-tls1_2", "-servername", "a.test", "-CAfile", PKI.ca)
        check("Protocol  : TLSv1.2" in out, "1.2: " + out[-800:])
        check("Cipher    : ECDHE-ECDSA-AES128-GCM-SHA256" in out, "server preference: " + out[-800:])


@t.test("SNI picks the certificate: exact, wildcard, unknown name gets the default")
def _():
    a = PKI.leaf("a", ["a.test", "*.a.test"])
    b = PKI.leaf("b", ["b.test"], kind="rsa")
    with Backend() as be, Clawd(tls_config(be, [a, b], default=b[0])) as cd:
        for sni, want in (("a.test", "CN = a.test"), ("x.a.test", "CN = a.test"),
                          ("b.test", "CN = b.test"), ("nobody.test", "CN = b.test"),
                          ("y.x.a.test", "CN = b.test")):
            rc, out = s_client(cd.port, "-servername", sni)
            check(("subject=" + want) in out, "SNI %s wants %s: %s" % (sni, want, out[:600]))


@t.test("ECDSA and RSA certificates for the same names side by side")
def _():
    ec = PKI.leaf("c-ec", ["c.test"])
    rsa = PKI.leaf("c-rsa", ["c.test"], kind="rsa")
    with Backend() as be, Clawd(tls_config(be, [ec, rsa])) as cd:
        rc, out = s_client(cd.port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256",
                           "-servername", "c.test")
        check("Server public key is 2048 bit" in out, "RSA cert for an RSA-only client: " + out[-900:])
        rc, out = s_client(cd.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256",
                           "-servername", "c.test")
        check("Server public key is 256 bit" in out, "EC cert for an ECDSA client: " + out[-900:])


@t.test("TLS 1.0 and 1.1, SSLv3-era and weak ciphers are refused; the same client on 1.2 works")
def _():
    a = PKI.leaf("a", ["a.test"])
    with Backend() as be, Clawd(tls_config(be, [a])) as cd:
        weak_ok = ["-cipher", "DEFAULT:@SECLEVEL=0"]
        for v in ("-tls1", "-tls1_1"):
            rc, out = s_client(cd.port, v, *weak_ok)
            check(rc != 0 and "Cipher is (NONE)" in out, "%s refused: %s" % (v, out[-600:]))
            check("no peer certificate available" in out, "%s: no certificate sent: %s" % (v, out[-600:]))
        rc, out = s_client(cd.port, "-tls1_2", *weak_ok)
        check("Protocol  : TLSv1.2" in out, "control: 1.2 with the same flags: " + out[-600:])
        for c in ("AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "AES256-SHA256", "ECDHE-ECDSA-AES128-SHA256"):
            rc, out = s_client(cd.port, "-tls1_2", "-cipher", c + ":@SECLEVEL=0")
            check(rc != 0 and "Cipher is (NONE)" in out, "%s refused: %s" % (c, out[-500:]))
        rc, out = s_client(cd.port, "-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256")
        check(rc != 0, "TLS 1.3 CCM_8 refused: " + out[-400:])


@t.test("min_version 1.3 refuses TLS 1.2")
def _():
    a = PKI.leaf("a", ["a.test"])
    with Backend() as be, Clawd(tls_config(be, [a], min_version="1.3")) as cd:
        rc, out = s_client(cd.port, "-tls1_2")
        check(rc != 0, "1.2 refused: " + out[-400:])
        rc, out = s_client(cd.port, "-tls1_3")
        check("TLSv1.3" in out, "1.3 works: " + out[-400:])


@t.test("ALPN: http/1.1 selected, h2-only gets no ALPN")
def _():
    a = PKI.leaf("a", ["a.test"])
    with Backend() as be, Clawd(tls_config(be, [a])) as cd:
        rc, out = s_client(cd.port, "-alpn", "h2,http/1.1")
        check("ALPN protocol: http/1.1" in out, "http/1.1: " + out[-600:])
        rc, out = s_client(cd.port, "-alpn", "h2")
        check("No ALPN negotiated" in out, "h2 only: " + out[-600:])


@t.test("session resumption: tickets (TLS 1.3 and 1.2) and the session cache (tickets off)")
def _():
    a = PKI.leaf("a", ["a.test"])
    req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    for extra, vers in (({}, ("-tls1_3", "-tls1_2")), ({"session_tickets": False}, ("-tls1_2", "-tls1_3"))):
        with Backend() as be, Clawd(tls_config(be, [a], **extra)) as cd:
            for v in vers:
                sess = os.path.join(cd.dir, "sess" + v)
                rc, out = s_client(cd.port, v, "-servername", "a.test", "-ign_eof", "-sess_out", sess,
                                   input=req)
                check("HTTP/1.1 200" in out and os.path.exists(sess), "first %s %s: %s" % (v, extra, out[-500:]))
                rc, out = s_client(cd.port, v, "-servername", "a.test", "-ign_eof", "-sess_in", sess,
                                   input=req)
                check("Reused, TLSv1." in out, "resumed %s %s: %s" % (v, extra, out[-700:]))
            rc, st = ctl(cd, "--json", "tls", "status")
            check('"resumed":2' in st, "resumptions counted: " + st)


@t.test("TLS 1.3: one session ticket per handshake; it resumes parallel connections; none without tickets and cache")
def _():
    a = PKI.leaf("a", ["a.test"])
    req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    base = [OPENSSL, "s_client", "-tls1_3", "-servername", "a.test", "-ign_eof"]
    for extra, want in (({}, 1), ({"session_tickets": False}, 1),
                        ({"session_tickets": False, "session_cache": 0}, 0)):
        with Backend() as be, Clawd(tls_config(be, [a], **extra)) as cd:
            sess = os.path.join(cd.dir, "sess")
            rc, out = s_client(cd.port, *base[2:], "-sess_out", sess, input=req)
            n = out.count("Post-Handshake New Session Ticket arrived")
            check("HTTP/1.1 200" in out and n == want,
                  "%s: %d tickets, want %d: %s" % (extra, n, want, out[-500:]))
            if not want:
                continue
            # Three clients at once with the one ticket, as a browser opening parallel connections.
            ps = [subprocess.Popen(base + ["-connect", "127.0.0.1:%d" % cd.port, "-sess_in", sess],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT) for _ in range(3)]
            outs = []
            for p in ps:
                try:
                    outs.append(p.communicate(req, timeout=15)[0].decode("utf-8", "replace"))
                except subprocess.TimeoutExpired:
                    p.kill()
                    outs.append(p.communicate()[0].decode("utf-8", "replace"))
            for o in outs:
                check("Reused, TLSv1.3" in o and "HTTP/1.1 200" in o, "%s parallel resume: %s" % (extra, o[-700:]))
                # A resumed handshake hands out a fresh ticket too, so the client never runs dry.
                k = o.count("Post-Handshake New Session Ticket arrived")
                check(k == 1, "%s: %d tickets after resumption, want 1: %s" % (extra, k, o[-700:]))


@t.test("garbage client hello and plain HTTP on the TLS port are refused cleanly; clawd keeps serving")
def _():
    a = PKI.leaf("a", ["a.test"])
    with Backend() as be, Clawd(tls_config(be, [a])) as cd:
        for junk in (os.urandom(600), b"\x16\x03\x01\x00\x05hello" + os.urandom(50),
                     b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"):
            s = socket.create_connection(("127.0.0.1", cd.port), timeout=5)
            s.sendall(junk)
            got = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    d = s.recv(4096)
                except (ConnectionResetError, socket.timeout):
                    break
                if not d:
                    break
                got += d
            s.close()
            check(b"HTTP/" not in got, "no HTTP answer in clear: %r" % got[:80])
            check(len(got) < 64, "at most an alert: %r" % got[:80])
        conn, status, _ = tls_get(client_ctx(PKI), cd.port, "a.test")
        conn.close()
        eq(status, 200, "still serving")
        rc, st = ctl(cd, "--json", "tls", "status")
        check('"handshake_failures":0' not in st, "failures counted: " + st)


@t.test("handshake timeout closes a silent connection")
def _():
    a = PKI.leaf("a", ["a.test"])
    with Backend() as be, Clawd(tls_config(be, [a], handshake_timeout="1s")) as cd:
        s = socket.create_connection(("127.0.0.1", cd.port), timeout=6)
        t0 = time.monotonic()
        got = s.recv(100)
        el = time.monotonic() - t0
        s.close()
        eq(got, b"", "closed without a byte")
        check(0.8 < el < 4, "closed after about 1 s, took %.2f s" % el)


@t.test("private key readable by group or others refused at start with a clear error")
def _():
    a = PKI.leaf("loose", ["a.test"])
    os.chmod(a[1], 0o640)
    cfg = tls_config("127.0.0.1:9", [a])
    d = make_tmpdir()
    path = os.path.join(d, "c.yaml")
    with open(path, "w") as f:
        f.write(to_yaml(cfg) + "\n")
    rc, out, err = run_clawd(["-c", path])
    check(rc != 0, "clawd refused to start")
    check("chmod 600" in err and "loose.key" in err and "mode 0640" in err, "message: " + err)
    check(path in err, "names the config file and line: " + err)


@t.test("config: bad min_version and unknown ktls value name file:line:key")
def _():
    a = PKI.leaf("a", ["a.test"])
    d = make_tmpdir()
    for bad, key in (({"min_version": "1.1"}, "listeners[0].tls.min_version"),
                     ({"ktls": "maybe"}, "listeners[0].tls.ktls"),
                     ({"default": "/nope.pem"}, "listeners[0].tls.default")):
        path = os.path.join(d, "c.yaml")
        with open(path, "w") as f:
            f.write(to_yaml(tls_config("127.0.0.1:9", [a], **bad)) + "\n")
        rc, out, err = run_clawd(["--check", "-c", path])
        check(rc != 0 and (path + ":") in (out + err) and key in (out + err), "%s: %s" % (key, out + err))


@t.test("tls reload: new certificate for new handshakes, an open keep-alive connection survives")
def _():
    a = PKI.leaf("r", ["a.test"])
    with Backend() as be, Clawd(tls_config(be, [a])) as cd:
        ctx = client_ctx(PKI)
        conn, status, _ = tls_get(ctx, cd.port, "a.test")
        eq(status, 200)
        serial1 = conn.getpeercert()["serialNumber"]
        PKI.leaf("r", ["a.test"])  # same files, new key and serial
        rc, out = ctl(cd, "tls", "reload")
        check(rc == 0 and "reloaded" in out, "reload: " + out)
        conn, status, _ = tls_get(ctx, cd.port, "a.test", conn=conn)
        eq(status, 200, "old connection still answered")
        conn.close()
        conn2, status, _ = tls_get(ctx, cd.port, "a.test")
        serial2 = conn2.getpeercert()["serialNumber"]
        conn2.close()
        check(serial1 != serial2, "new handshake got the new certificate (%s vs %s)" % (serial1, serial2))
        # A broken key on reload is refused and the running certificate stays.
        os.chmod(a[1], 0o644)
        rc, out = ctl(cd, "tls", "reload")
        check(rc == 1 and "chmod 600" in out, "refused reload: " + out)
        conn3, status, _ = tls_get(ctx, cd.port, "a.test")
        eq(conn3.getpeercert()["serialNumber"], serial2, "still the last good certificate")
        conn3.close()
        os.chmod(a[1], 0o600)


@t.test("clawctl tls status and status show names, expiry warning and the record layer path")
def _():
    a = PKI.leaf("soon", ["soon.test", "*.soon.test"], days=3)
    with Backend() as be, Clawd(tls_config(be, [a])) as cd:
        rc, out = ctl(cd, "tls", "status")
        check(rc == 0 and "soon.test *.soon.test" in out and "WARNING: expires soon" in out,
              "tls status: " + out)
        check("userspace record layer" in out or "ktls record layer" in out, "path: " + out)
        rc, out = ctl(cd, "status")
        check(" tls userspace " in out or " tls ktls " in out, "status line: " + out)
        rc, out = ctl(cd, "tls", "bogus")
        eq(rc, 2, "bad subcommand exits 2")


@t.test("a 100 MiB request body and a 100 MiB response through TLS hash equal")
def _():
    a = PKI.leaf("a", ["a.test"])
    n = 100 << 20
    be = Backend()
    cfg = tls_config(be, [a])
    cfg["routes"][0]["max_body"] = "0"
    with be, Clawd(cfg) as cd:
        ctx = client_ctx(PKI)
        raw = socket.create_connection(("127.0.0.1", cd.port), timeout=60)
        conn = ctx.wrap_socket(raw, server_hostname="a.test")
        conn.sendall(("POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % n).encode())
        for chunk in pattern_chunks(n):
            conn.sendall(chunk)
        rd = Reader(conn, timeout=60)
        head = rd.read_until(b"\r\n\r\n", time.monotonic() + 60)
        start, headers = parse_head(head)
        status = int(start.split()[1])
        body = bytearray()
        rd.read_exact(int(hget(headers, "content-length")), time.monotonic() + 60, body.extend)
        eq(status, 200)
        eq(json.loads(bytes(body))["body_sha256"], pattern_sha256(n), "request body hash")
        conn.sendall(("GET /down?size=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % n).encode())
        head = rd.read_until(b"\r\n\r\n", time.monotonic() + 60)
        start, headers = parse_head(head)
        h = hashlib.sha256()
        rd.read_exact(int(hget(headers, "content-length")), time.monotonic() + 120, h.update)
        conn.close()
        eq(h.hexdigest(), pattern_sha256(n), "response body hash")


t.main()
