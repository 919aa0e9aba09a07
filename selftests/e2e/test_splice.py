#!/usr/bin/env python3
# selftests/e2e/test_splice.py — sockmap splice end to end: splice and tcp modes, FIN/RST, memory bound, fallback, accounting.
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

from harness import *

t = Tap()

PIN_BASE = "/sys/fs/bpf/openclaw-e2e-splice-%d" % os.getpid()
BLOCK = bytes(range(256)) * 256  # 64 KiB pattern block
# The backend names its own X-Request-ID so clawd forwards this head byte for byte.
OK_RESP = b"HTTP/1.1 200 OK\r\nX-Request-ID: backend-1\r\nContent-Length: 2\r\n\r\nok"


def need_bpf():
    if os.geteuid() != 0 or not os.path.isdir("/sys/fs/bpf"):
        raise Skip("needs root and a bpf file system")


def pin_dir(name):
    return "%s/%s" % (PIN_BASE, name)


def splice_cfg(backend_addr, mode="splice", **splice):
    cfg = simple_config(backend_addr)
    cfg["routes"][0]["mode"] = mode
    if mode == "tcp":
        cfg["routes"][0]["listeners"] = ["web"]
    sp = {"pin_dir": pin_dir("%s-%d" % (mode, free_port()))}
    sp.update(splice)
    cfg["splice"] = sp
    return cfg


def ctl(cd, cmd, **args):
    path = os.path.join(cd.dir, "ctl.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        req = dict(args)
        req["cmd"] = cmd
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(65536)
            if not d:
                break
            buf += d
        return json.loads(buf)
    finally:
        s.close()


def pattern(n):
    """Yields n bytes of the repeating pattern in 64 KiB blocks."""
    left = n
    while left:
        k = min(left, len(BLOCK))
        yield BLOCK[:k]
        left -= k


def pattern_hash(n):
    h = hashlib.sha256()
    for b in pattern(n):
        h.update(b)
    return h.hexdigest()


class RawBackend:
    """
    A backend speaking raw bytes. http=True: answers the first HTTP request
    head with a 200 first (what splice mode needs), keeping bytes after the
    head. Then per mode: "echo" (until EOF, then FIN), "swap" (sends `size`
    pattern bytes while hashing what it reads until EOF), "hold" (reads
    slowly at `rate` bytes/s). Every connection's outcome lands in results.
    """

    def __init__(self, mode, http=False, size=0, rate=0, rcvbuf=0, after=b""):
        # after: bytes sent in the same write as the 200, right behind it.
        self.mode, self.http, self.size, self.rate, self.rcvbuf = mode, http, size, rate, rcvbuf
        self.after = after
        self.results = []
        self.conns = []
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.addr = "127.0.0.1:%d" % self.ls.getsockname()[1]
        self.read_bytes = 0
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

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

    def _loop(self):
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        res = {"error": None, "got": 0, "hash": None, "eof": False}
        try:
            c.settimeout(60)
            rest = b""
            if self.http:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                rest = buf.split(b"\r\n\r\n", 1)[1]
                c.sendall(OK_RESP + self.after)
            getattr(self, "_" + self.mode)(c, rest, res)
        except OSError as e:
            res["error"] = e.errno or str(e)
        finally:
            with self.lock:
                self.results.append(res)

    def _echo(self, c, rest, res):
        if rest:
            c.sendall(rest)
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        res["eof"] = True
        c.shutdown(socket.SHUT_WR)

    def _swap(self, c, rest, res):
        h = hashlib.sha256(rest)
        got = [len(rest)]

        def reader():
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                h.update(d)
                got[0] += len(d)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        if self.http:
            # Speak only after the client has, so these tests measure the bulk path
            # (a backend that speaks right behind its response has its own tests).
            deadline = time.monotonic() + 30
            while not got[0] and th.is_alive() and time.monotonic() < deadline:
                time.sleep(0.001)
        for b in pattern(self.size):
            c.sendall(b)
        c.shutdown(socket.SHUT_WR)
        th.join(120)
        res.update(got=got[0], hash=h.hexdigest(), eof=True)

    def _hold(self, c, rest, res):
        # A slow reader: `rate` bytes per second in 64 KiB steps.
        self.read_bytes = len(rest)
        while not self.stop.is_set():
            d = c.recv(65536)
            if not d:
                break
            self.read_bytes += len(d)
            time.sleep(len(d) / self.rate)
        res["eof"] = True


def serve_each(handler):
    """A listening socket whose every connection runs handler(conn) on a thread (the
    harness probes a listener with a connection of its own: tcp mode forwards it)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)

    def loop():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls


def swap_client(port, size, http=False, out=None):
    """Sends size pattern bytes while reading and hashing; returns (sent_hash_ok, got, hash)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(60)
    if http:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        head = b""
        while len(head) < len(OK_RESP):
            head += s.recv(len(OK_RESP) - len(head))
        eq(head, OK_RESP, "first response")
    h = hashlib.sha256()
    got = [0]

    def reader():
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            h.update(d)
            got[0] += len(d)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    for b in pattern(size):
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
    th.join(120)
    s.close()
    r = (got[0], h.hexdigest())
    if out is not None:
        out.append(r)
    return r


def sockhash_entries(d):
    """Entries in the pinned SOCKHASH, read with bpftool."""
    p = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", d + "/splice_socks"],
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 0, "bpftool map dump: %s" % p.stderr)
    return len(json.loads(p.stdout or "[]"))


def mem_available():
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("MemAvailable:"):
                return int(ln.split()[1]) * 1024
    return 0


@t.test("splice: a keep-alive connection carries 1,000 requests after the hand-off, on one backend connection")
def _():
    need_bpf()
    with Backend() as be, Clawd(splice_cfg(be.addr)) as cd:
        with Client(cd.port) as c:
            for i in range(1000):
                c.send(b"GET /r%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
                r = c.response()
                eq(r.status, 200, "request %d" % i)
                check(("/r%d" % i).encode() in r.body, "request %d: echo of its own path" % i)
                if i == 1:
                    lst = ctl(cd, "splice.list")["connections"]
                    eq(len(lst), 1, "spliced connections after the first exchange")
                    eq(lst[0]["path"], "kernel")
        eq(be.connections, 1, "backend connections")
        eq(be.requests, 1000, "backend requests")
        wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], what="connection gone")
        lines = cd.wait_log(2)
        eq(lines[0]["method"], "GET")
        eq(lines[-1]["method"], "SPLICE")


# bench/results/splice-20261121T160133Z.md had "small | splice | errors: 34" (wrk -t1
# -c32, 128 B responses over keep-alive). It did not reproduce on the current code
# (three 5 s runs of 32 connections and one of 128, 0 errors); this is wrk's
# pattern, as a regression test: every hand-off racing the next request and the
# other hand-offs, then every connection closed by the client.
@t.test("splice: 32 keep-alive connections at once, 25 small requests each, all answered, "
        "all spliced, closed cleanly")
def _():
    need_bpf()
    nconn, nreq = 32, 25
    want = b"".join(pattern_chunks(128))
    with Backend() as be, Clawd(splice_cfg(be.addr)) as cd:
        errors = []
        go = threading.Barrier(nconn)

        def client(k):
            try:
                with Client(cd.port, timeout=10) as c:
                    go.wait(10)
                    for i in range(nreq):
                        # The next request leaves the moment the previous response is read,
                        # so the second one races the hand-off.
                        c.send(b"GET /c%d/r%d?size=128 HTTP/1.1\r\nHost: a\r\n\r\n" % (k, i))
                        r = c.response(timeout=10)
                        if r.status != 200 or r.body != want:
                            errors.append("conn %d request %d: status %d, %d body bytes"
                                          % (k, i, r.status, len(r.body)))
                            return
            except Exception as e:  # noqa: B902 — any failure of a client is the finding
                errors.append("conn %d: %s: %s" % (k, type(e).__name__, e))

        ths = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(nconn)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(60)
        eq(errors, [], "client errors")
        eq(be.counts()["requests"], nconn * nreq, "requests at the backend")
        wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], timeout=10,
                 what="every spliced connection closed")
        st = ctl(cd, "splice.stats")
        eq((st["spliced"], st["fallbacks"], st["insert_failures"], st["resets"]),
           (nconn, 0, 0, 0), "spliced, fallbacks, insert_failures, resets")
        eq(st["kernel"]["redirect_fail"], 0, "redirects the program could not make")
        lines = cd.wait_log(2 * nconn)
        eq(sorted(ln["method"] for ln in lines), ["GET"] * nconn + ["SPLICE"] * nconn,
           "one GET (the first request) and one SPLICE line per connection")
        eq([ln for ln in lines if ln.get("error")], [], "access log lines with an error")


def swap_1g(budget):
    """1 GiB each way at once through a tcp route; asserts both ends' bytes and hashes."""
    size = 1 << 30
    extra = {"budget": budget} if budget else {}
    with RawBackend("swap", size=size) as be, Clawd(splice_cfg(be.addr, "tcp", **extra)) as cd:
        t0 = time.monotonic()
        got, h = swap_client(cd.port, size)
        took = time.monotonic() - t0
        note("2 GiB moved in %.1f s (%.0f MB/s each way)" % (took, size / took / 1e6))
        want = pattern_hash(size)
        k = ctl(cd, "splice.stats")["kernel"]
        note("passed %d of %d bytes through clawd; %d already-delivered bytes trimmed off "
             "retransmitted skbs" % (k["pass_bytes"], 2 * size, k["dup_bytes"]))
        eq(k["dup_failures"], 0, "skbs the program could not trim")
        eq(got, size, "bytes at the client")
        eq(h, want, "hash at the client")
        wait_for(lambda: [r for r in be.results if r["got"]], what="test connection done")
        r = [r for r in be.results if r["got"]][0]
        eq(r["got"], size, "bytes at the backend")
        eq(r["hash"], want, "hash at the backend")
        st = ctl(cd, "splice.stats")
        check(st["kernel"]["redirect_bytes"] > 0, "the program moved the bytes: %s" % st)
        check(took < 30, "took %.1f s" % took)


# A budget no transfer here reaches: the kernel path alone, never paused.
@t.test("tcp: 1 GiB each way at once arrives intact (sha256) in under 30 s")
def _():
    need_bpf()
    swap_1g("1g")


# Regression (issue 8): when the budget pauses a direction thousands of times, the
# receiving socket runs out of buffer, TCP retransmits, and a retransmission that
# overlaps bytes already received reached the verdict whole: one 65,483-byte
# loopback segment arrived twice in about one run in three. The program now trims
# the already-judged head (docs/splice.md, "Retransmissions and the verdict").
@t.test("tcp: 1 GiB each way intact while the default budget keeps pausing")
def _():
    need_bpf()
    swap_1g(None)


@t.test("splice: 8 parallel connections, 64 MiB each way each, hashes equal")
def _():
    need_bpf()
    size = 64 << 20
    # Both the kernel path alone (a budget never reached) and the default budget's pausing.
    for budget in ("1g", "4m"):
        _parallel(size, budget)


def _parallel(size, budget):
    with RawBackend("swap", http=True, size=size) as be, Clawd(splice_cfg(be.addr, budget=budget)) as cd:
        out = []
        ths = [threading.Thread(target=swap_client, args=(cd.port, size, True, out)) for _ in range(8)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(120)
        want = pattern_hash(size)
        eq(len(out), 8, "clients done")
        for got, h in out:
            eq((got, h), (size, want), "client side")
        wait_for(lambda: len(be.results) == 8, timeout=20, what="backends done")
        for r in be.results:
            eq((r["got"], r["hash"]), (size, want), "backend side")
        st = ctl(cd, "splice.stats")
        eq(st["spliced"], 8, "spliced connections")
        eq(st["kernel"]["dup_failures"], 0, "skbs the program could not trim")


@t.test("half-close: client FIN reaches the backend while the backend keeps sending, and back")
def _():
    need_bpf()
    with RawBackend("echo") as be, Clawd(splice_cfg(be.addr, "tcp")) as cd:
        s = socket.create_connection(("127.0.0.1", cd.port))
        s.settimeout(5)
        s.sendall(b"x" * 100000)
        s.shutdown(socket.SHUT_WR)  # our write side closed; the echo still comes back
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        eq(len(got), 100000, "echo after our FIN")
        wait_for(lambda: len([r for r in be.results if r["eof"]]) == 2,
                 what="backend saw the FIN (probe and test connection)")
        s.close()
    # The other direction: the backend closes its write side first, the client still sends.
    done = threading.Event()
    received = []

    def server(c):
        c.settimeout(5)
        c.sendall(b"bye")
        c.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            buf += d
        c.close()
        if buf:
            received.append(buf)
            done.set()

    ls = serve_each(server)
    try:
        with Clawd(splice_cfg("127.0.0.1:%d" % ls.getsockname()[1], "tcp")) as cd:
            s = socket.create_connection(("127.0.0.1", cd.port))
            s.settimeout(5)
            buf = b""
            while True:
                d = s.recv(100)
                if not d:
                    break
                buf += d
            eq(buf, b"bye", "backend bytes, then its FIN")
            s.sendall(b"still talking")
            s.shutdown(socket.SHUT_WR)
            check(done.wait(5), "backend saw our bytes and FIN")
            eq(received[0], b"still talking", "bytes after the backend's FIN")
            s.close()
    finally:
        ls.close()


@t.test("reset: a client RST resets the backend, a backend RST resets the client")
def _():
    need_bpf()
    with RawBackend("echo") as be, Clawd(splice_cfg(be.addr, "tcp")) as cd:
        s = socket.create_connection(("127.0.0.1", cd.port))
        s.sendall(b"ping")
        s.settimeout(5)
        eq(s.recv(4), b"ping")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        wait_for(lambda: [r for r in be.results if r["error"]], timeout=3, what="backend torn down")
        eq([r["error"] for r in be.results if r["error"]], [104], "backend got ECONNRESET")
        wait_for(lambda: ctl(cd, "splice.stats")["resets"] == 1, what="reset counted")
    def server(c):
        if c.recv(10):
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()

    ls = serve_each(server)
    try:
        with Clawd(splice_cfg("127.0.0.1:%d" % ls.getsockname()[1], "tcp")) as cd:
            s = socket.create_connection(("127.0.0.1", cd.port))
            s.settimeout(3)
            s.sendall(b"hi")
            err = None
            try:
                while s.recv(100):
                    pass
            except OSError as e:
                err = e.errno
            eq(err, 104, "client got ECONNRESET")
            s.close()
    finally:
        ls.close()


@t.test("accounting: splice.list and the access log count exactly the bytes sent each way")
def _():
    need_bpf()
    with RawBackend("echo", http=True) as be, Clawd(splice_cfg(be.addr)) as cd:
        s = socket.create_connection(("127.0.0.1", cd.port))
        s.settimeout(5)
        req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        s.sendall(req)
        eq(s.recv(len(OK_RESP)), OK_RESP)
        payload = b"z" * 3000000
        s.sendall(payload)
        got = 0
        while got < len(payload):
            got += len(s.recv(1 << 20))
        lst = ctl(cd, "splice.list")["connections"]
        eq(len(lst), 1)
        eq(lst[0]["bytes_to_backend"], len(req) + len(payload), "to backend (list)")
        eq(lst[0]["bytes_to_client"], len(OK_RESP) + len(payload), "to client (list)")
        clawctl = os.environ.get("CLAWCTL") or os.path.join(ROOT, "build", "clawctl")
        sock = os.path.join(cd.dir, "ctl.sock")
        r = subprocess.run([clawctl, "--socket", sock, "splice", "list"], capture_output=True,
                           text=True, timeout=10)
        eq(r.returncode, 0, "clawctl splice list: " + r.stderr)
        check("TO_BACKEND" in r.stdout and str(len(req) + len(payload)) in r.stdout, r.stdout)
        r = subprocess.run([clawctl, "--socket", sock, "--json", "splice", "stats"],
                           capture_output=True, text=True, timeout=10)
        eq(r.returncode, 0, "clawctl splice stats: " + r.stderr)
        eq(json.loads(r.stdout)["active"], 1, "active in clawctl --json splice stats")
        r = subprocess.run([clawctl, "--socket", sock, "splice", "bogus"], capture_output=True,
                           text=True, timeout=10)
        eq(r.returncode, 2, "bad subcommand")
        s.shutdown(socket.SHUT_WR)
        eq(s.recv(10), b"")
        s.close()
        lines = cd.wait_log(2)
        eq(lines[-1]["method"], "SPLICE")
        eq(lines[-1]["bytes_in"], len(req) + len(payload), "to backend (access log)")
        eq(lines[-1]["bytes_out"], len(OK_RESP) + len(payload), "to client (access log)")


@t.test("idle timeout: a spliced connection idle for splice.idle_timeout is closed by clawd")
def _():
    need_bpf()
    with RawBackend("echo") as be, Clawd(splice_cfg(be.addr, "tcp", idle_timeout="1s")) as cd:
        s = socket.create_connection(("127.0.0.1", cd.port))
        s.settimeout(5)
        s.sendall(b"a")
        eq(s.recv(1), b"a")
        t0 = time.monotonic()
        eq(s.recv(10), b"", "closed by clawd")
        took = time.monotonic() - t0
        check(0.8 < took < 2.5, "closed after %.2f s" % took)
        lines = wait_for(lambda: [ln for ln in cd.log_lines()
                                  if ln.get("error") == "splice idle timeout"], what="log line")
        eq(len(lines), 1, "idle closes logged")


@t.test("bytes queued before insertion are delivered at once, not at the next packet")
def _():
    need_bpf()
    with RawBackend("echo") as be, Clawd(splice_cfg(be.addr, "tcp")) as cd:
        s = socket.create_connection(("127.0.0.1", cd.port))
        s.settimeout(2)
        # Sent before clawd has connected to the backend: it waits in the client socket.
        s.sendall(b"early bytes")
        t0 = time.monotonic()
        got = b""
        while len(got) < 11:
            got += s.recv(100)
        eq(got, b"early bytes")
        check(time.monotonic() - t0 < 0.5, "echo within 0.5 s")
        s.close()


@t.test("pipelined bytes after the first request reach the backend before spliced ones")
def _():
    need_bpf()
    with RawBackend("echo", http=True) as be, Clawd(splice_cfg(be.addr)) as cd:
        s = socket.create_connection(("127.0.0.1", cd.port))
        s.settimeout(5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPIPELINED-1;")
        time.sleep(0.2)
        s.sendall(b"AFTER-2;")
        want = OK_RESP + b"PIPELINED-1;AFTER-2;"
        got = b""
        while len(got) < len(want):
            d = s.recv(1000)
            if not d:
                break
            got += d
        eq(got, want)
        s.close()


def backend_speaks_first(cd, hello):
    """The first exchange, then the backend's own bytes, then an echo round trip of a
    line that is no HTTP request (HTTP would answer 400 "bare LF")."""
    s = socket.create_connection(("127.0.0.1", cd.port))
    s.settimeout(5)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        want = OK_RESP + hello
        got = b""
        while len(got) < len(want):
            d = s.recv(65536)
            if not d:
                break
            got += d
        eq(got, want, "response, then the backend's bytes, in order")
        s.sendall(b"ping\n")
        echo = b""
        while len(echo) < 5:
            d = s.recv(100)
            if not d:
                break
            echo += d
        eq(echo, b"ping\n", "client bytes after the hand-off reach the backend, not the HTTP parser")
    finally:
        s.close()


@t.test("hand-off: backend bytes sent right behind the first response reach the client in order; spliced")
def _():
    need_bpf()
    hello = b"SERVER-SPEAKS-FIRST\n" * 50
    with RawBackend("echo", http=True, after=hello) as be, Clawd(splice_cfg(be.addr)) as cd:
        st0 = ctl(cd, "splice.stats")
        for _ in range(5):
            backend_speaks_first(cd, hello)
        st = ctl(cd, "splice.stats")
        eq(st["spliced"] - st0["spliced"], 5, "every connection spliced: %s" % st)
        eq(st["fallbacks"], st0["fallbacks"], "no fallback")
        wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], what="connections gone")
        # The access log is written in batches: wait for the five SPLICE lines.
        lines = wait_for(lambda: (lambda l: l if len(l) >= 5 else None)(
            [ln for ln in cd.log_lines() if ln.get("method") == "SPLICE"]), what="5 SPLICE lines")
        eq(len(lines), 5, "one SPLICE access log line per connection")
        req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        eq(sorted((ln["bytes_in"], ln["bytes_out"]) for ln in lines),
           [(len(req) + 5, len(OK_RESP) + len(hello) + 5)] * 5,
           "each counts the request and the echo in, the response, the backend's bytes and the echo out")
        errs = [ln for ln in cd.log_lines() if ln.get("status") == 400]
        eq(errs, [], "nothing parsed as a request")


@t.test("hand-off: without the program, backend bytes behind the response are relayed in userspace, counted")
def _():
    hello = b"SERVER-SPEAKS-FIRST\n"
    with RawBackend("echo", http=True, after=hello) as be, \
            Clawd(splice_cfg(be.addr, enabled="off")) as cd:
        for _ in range(3):
            backend_speaks_first(cd, hello)
        st = ctl(cd, "splice.stats")
        eq(st["loaded"], False)
        check(st["fallbacks"] >= 3, "each connection counted as a fallback: %s" % st)
        eq([ln for ln in cd.log_lines() if ln.get("status") == 400], [], "nothing parsed as a request")


def mem_available_median(n=5, gap=0.01):
    v = []
    for i in range(n):
        if i:
            time.sleep(gap)
        v.append(mem_available())
    return sorted(v)[n // 2]


def slow_reader_trial(budget, secs=5):
    """
    One slow-reader run through a tcp route with splice.budget `budget` (bytes):
    the client sends as fast as it can for `secs` while the backend reads 4 MB/s.
    Returns a dict: sent, read, worst (peak acknowledged-but-unread bytes),
    peak_drop (peak MemAvailable drop: noisy, only reported), passed (bytes the
    program paused), released (MemAvailable regained when the connection is reset
    right after the sender stops: what the connection pinned, measured over a
    window of well under a second instead of the whole run).
    """
    rate = 4 << 20
    rcvbuf = 256 << 10
    with RawBackend("hold", rate=rate, rcvbuf=rcvbuf) as be, \
            Clawd(splice_cfg(be.addr, "tcp", budget="%dk" % (budget >> 10))) as cd:
        s = socket.create_connection(("127.0.0.1", cd.port))
        try:
            s.setblocking(False)
            mem0 = mem_available()
            sent = worst = peak_drop = 0
            deadline = time.monotonic() + secs
            while time.monotonic() < deadline and sent < (1 << 30):
                try:
                    sent += s.send(BLOCK)
                except BlockingIOError:
                    time.sleep(0.01)
                outq = struct.unpack("i", __import__("fcntl").ioctl(s.fileno(), 0x5411,
                                                                    b"\0" * 4))[0]
                worst = max(worst, sent - outq - be.read_bytes)
                peak_drop = max(peak_drop, mem0 - mem_available())
            # The sender has stopped; the reader drains only ~40 KiB in the 50 ms
            # of sampling, so what the connection pins is still pinned here.
            held = mem_available_median()
            me = "127.0.0.1:%d" % s.getsockname()[1]
            mine = [c for c in ctl(cd, "splice.list")["connections"] if c["client"] == me]
            eq(len(mine), 1, "the test connection in splice.list")
            eq(mine[0]["path"], "kernel", "the test connection's path")
            # A client RST makes clawd reset both sides (see "reset" above): every
            # queue of the connection is freed at once, the program's too.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            s.close()
        wait_for(lambda: not [c for c in ctl(cd, "splice.list")["connections"]
                              if c["client"] == me], timeout=10,
                 what="the reset connection gone from splice.list")
        # The psock's queue is freed after an RCU grace period, from a work item.
        time.sleep(0.2)
        released = mem_available_median(n=11, gap=0.03) - held
        k = ctl(cd, "splice.stats")["kernel"]
        return dict(sent=sent, read=be.read_bytes, worst=worst, peak_drop=peak_drop,
                    passed=k["pass_bytes"], released=released)


@t.test("memory bound: a slow reader keeps acknowledged-but-unread bytes and the memory the "
        "connection pins within budget")
def _():
    need_bpf()
    budget = 4 << 20
    rcvbuf = 256 << 10
    # In flight (budget) + paused on clawd's client socket (budget) + the reader's buffer.
    slack = 2 * budget + 4 * rcvbuf + (1 << 20)
    # Memory: the same bytes at their skbs' true size, the sender's own send
    # queue (up to tcp_wmem's 4 MiB) and room for the rest of the host.
    mem_bound = slack + (64 << 20)
    released = []
    # Other processes on the host move MemAvailable too. The bytes are checked in
    # every run (exact, no noise); the memory in up to three runs, passing on the
    # first within bound: noise only has to stay away for one short window, while
    # a connection pinning more than the bound (budget: 1g pins ~500 MiB here)
    # fails all three.
    for run in range(3):
        r = slow_reader_trial(budget)
        note("run %d: sent %d MiB in 5 s, reader read %d MiB, acked-but-unread peak %.1f MiB, "
             "freed at reset %.1f MiB (MemAvailable drop peak %.1f MiB, not asserted)"
             % (run + 1, r["sent"] >> 20, r["read"] >> 20, r["worst"] / 2**20,
                r["released"] / 2**20, r["peak_drop"] / 2**20))
        check(r["worst"] <= slack, "acknowledged but unread %d > %d" % (r["worst"], slack))
        check(r["passed"] > 0, "the budget paused the redirect (pass_bytes %d)" % r["passed"])
        released.append(r["released"])
        if r["released"] <= mem_bound:
            break
    check(min(released) <= mem_bound,
          "memory freed when the connection was reset, MiB per run: %s > %.0f" %
          (["%.1f" % (x / 2**20) for x in released], mem_bound / 2**20))


@t.test("splice: required refuses a connection it cannot insert, cleanly, and keeps the others")
def _():
    need_bpf()
    with RawBackend("echo") as be, \
            Clawd(splice_cfg(be.addr, "tcp", enabled="required", max_connections=1)) as cd:
        # The harness's start-up probe is a connection too: let it go first.
        wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], what="probe gone")
        a = socket.create_connection(("127.0.0.1", cd.port))
        a.settimeout(3)
        a.sendall(b"one")
        eq(a.recv(3), b"one")
        refused0 = ctl(cd, "splice.stats")["refused"]  # the harness's probe may count too
        b = socket.create_connection(("127.0.0.1", cd.port))
        b.settimeout(3)
        try:
            b.sendall(b"two")
            eq(b.recv(3), b"", "second connection closed")
        except ConnectionResetError:
            pass
        st = ctl(cd, "splice.stats")
        eq(st["refused"] - refused0, 1, "refused")
        a.sendall(b"still")
        eq(a.recv(5), b"still", "first connection unaffected")
        a.close()
        b.close()


@t.test("fallback: with the program off, tcp routes relay in userspace and splice routes stay HTTP")
def _():
    with RawBackend("swap", size=16 << 20) as be, \
            Clawd(splice_cfg(be.addr, "tcp", enabled="off")) as cd:
        got, h = swap_client(cd.port, 16 << 20)
        eq((got, h), (16 << 20, pattern_hash(16 << 20)), "relayed intact")
        st = ctl(cd, "splice.stats")
        eq(st["loaded"], False)
        check(st["fallbacks"] >= 1, "fallback counted: %s" % st)
        check("relaying in userspace" in cd.stderr(), "fallback logged")
        eq(cd.stderr().count("relaying in userspace"), 1, "logged once")
    with Backend() as be, Clawd(splice_cfg(be.addr, enabled="off")) as cd:
        with Client(cd.port) as c:
            for i in range(20):
                c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                eq(c.response().status, 200)
        eq(be.requests, 20, "every request seen by the backend through HTTP")


@t.test("map entries: two per spliced connection while open, none after close")
def _():
    need_bpf()
    cfg = None
    with RawBackend("echo") as be:
        cfg = splice_cfg(be.addr, "tcp")
        d = cfg["splice"]["pin_dir"]
        with Clawd(cfg) as cd:
            s = socket.create_connection(("127.0.0.1", cd.port))
            s.settimeout(3)
            s.sendall(b"a")
            eq(s.recv(1), b"a")
            eq(sockhash_entries(d), 2, "entries while open")
            s.close()
            wait_for(lambda: sockhash_entries(d) == 0, what="entries gone")
            wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], what="list empty")
        check(not os.path.exists(d + "/splice_socks"), "pins removed at stop")


@t.test("port check: a client that connects and closes at once is an ordinary close, not a fallback; "
        "bytes sent before its FIN still go through")
def _():
    need_bpf()
    with RawBackend("echo") as be, Clawd(splice_cfg(be.addr, "tcp")) as cd:
        wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], what="probe gone")
        st0 = ctl(cd, "splice.stats")
        # Connect and close: the FIN is there before clawd's backend connect
        # completes, so the client socket is no longer ESTABLISHED when clawd
        # inserts it and the SOCKHASH refuses it.
        for _i in range(20):
            socket.create_connection(("127.0.0.1", cd.port)).close()
        # Send, then FIN at once: the echo must still come back, then EOF.
        for i in range(5):
            s = socket.create_connection(("127.0.0.1", cd.port))
            s.settimeout(5)
            msg = b"ping-%d" % i
            s.sendall(msg)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                d = s.recv(64)
                if not d:
                    break
                got += d
            s.close()
            eq(got, msg, "echo of a half-closed connection %d" % i)
        wait_for(lambda: ctl(cd, "splice.list")["connections"] == [], what="all closed")
        st = ctl(cd, "splice.stats")
        eq(st["fallbacks"] - st0["fallbacks"], 0, "fallbacks")
        eq(st["insert_failures"] - st0["insert_failures"], 0, "insert failures")
        check("could not be inserted" not in cd.stderr(), "no fallback warning: %s" % cd.stderr()[-400:])
        check("inserting the sockets" not in cd.stderr(), "no insert warning")


@t.test("config: splice mode with auth, and a tcp route without listeners, are refused")
def _():
    base = simple_config("127.0.0.1:1")
    base["routes"][0]["mode"] = "tcp"
    p = os.path.join(make_tmpdir(), "c.yaml")
    with open(p, "w") as f:
        f.write(to_yaml(base) + "\n")
    r = subprocess.run([CLAWD, "--check", "-c", p], capture_output=True, text=True, timeout=10)
    eq(r.returncode != 0, True, "refused")
    check("must name its listeners" in r.stderr + r.stdout, r.stderr)
    base["routes"][0]["mode"] = "splice"
    base["routes"][0]["auth"] = {"type": "api_key"}
    with open(p, "w") as f:
        f.write(to_yaml(base) + "\n")
    r = subprocess.run([CLAWD, "--check", "-c", p], capture_output=True, text=True, timeout=10)
    check(r.returncode != 0 and "cannot be combined with auth" in r.stderr + r.stdout,
          r.stderr + r.stdout)


@t.test("required: clawd refuses to start when the program cannot load; auto carries on in userspace")
def _():
    need_bpf()
    d = make_tmpdir()  # not a bpf file system: loading fails
    with RawBackend("echo") as be:
        cfg = splice_cfg(be.addr, "tcp", enabled="required", pin_dir=d + "/pins")
        cd = Clawd(cfg, wait_listen=False)
        cd.start()
        rc = cd.wait_exit(10)
        check(rc not in (None, 0), "clawd exited with %r" % rc)
        check("not on a bpf file system" in cd.stderr(), cd.stderr())
        cd.kill()
        cfg = splice_cfg(be.addr, "tcp", enabled="auto", pin_dir=d + "/pins")
        with Clawd(cfg) as cd:
            s = socket.create_connection(("127.0.0.1", cd.port))
            s.settimeout(3)
            s.sendall(b"via userspace")
            got = b""
            while len(got) < 13:
                got += s.recv(100)
            eq(got, b"via userspace")
            s.close()
            eq(ctl(cd, "splice.stats")["loaded"], False)


@t.test("stop: a spliced connection still open runs until drain_timeout, then closes; clawd exits 0")
def _():
    need_bpf()
    with RawBackend("echo") as be:
        cfg = splice_cfg(be.addr, "tcp")
        cfg["drain_timeout"] = "1s"
        with Clawd(cfg) as cd:
            s = socket.create_connection(("127.0.0.1", cd.port))
            s.settimeout(5)
            s.sendall(b"a")
            eq(s.recv(1), b"a")
            took = cd.stop()
            check(took < 5, "stopped in %.1f s" % took)
            eq(s.recv(10), b"", "closed at the drain deadline")
            s.close()
            lines = [ln for ln in cd.log_lines() if ln.get("method") == "TCP"]
            check(any(ln.get("error") == "shutdown: drain time over" for ln in lines), lines)


try:
    t.main()
finally:
    shutil.rmtree(PIN_BASE, ignore_errors=True)
