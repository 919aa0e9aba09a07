# selftests/e2e/harness.py — end-to-end harness: TAP subtests, raw-socket backends and client, a managed clawd.
"""
Stdlib-only helpers shared by every selftests/e2e/test_*.py.

    from harness import *
    t = Tap()

    @t.test("GET through the proxy")
    def _():
        with Backend() as be, Clawd(simple_config(be)) as cd:
            r = request(cd.port, b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
            eq(r.status, 200)

    t.main()

Backends are threads of the test process speaking raw HTTP/1.1 so the bytes
on the wire are exactly what a test says.  Everything started here (clawd
processes, backend threads, temp dirs) is registered and torn down on normal
exit, on failure and on SIGTERM/SIGINT.
"""

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLAWD = os.environ.get("CLAWD") or os.path.join(ROOT, "build", "clawd")

# ---------------------------------------------------------------------------
# Cleanup registry: processes and directories that must never outlive the run.

_procs = set()
_dirs = set()
_pids = set()  # clawd processes that are not our children (the new process of a binary upgrade)
_cleanup_lock = threading.Lock()


def track_pid(pid):
    """Registers a clawd pid started by clawd itself (binary upgrade) for cleanup."""
    _pids.add(int(pid))


def _kill_tracked():
    for pid in list(_pids):
        try:
            # Only a live clawd: a pid reused by something else is left alone.
            with open("/proc/%d/stat" % pid) as f:
                st = f.read()
            if "(clawd)" in st and st.split(") ", 1)[1][:1] != "Z":
                os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):
            pass
        _pids.discard(pid)


def _cleanup():
    with _cleanup_lock:
        _kill_tracked()
        for p in list(_procs):
            try:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=5)
            except Exception:
                pass
            _procs.discard(p)
        for d in list(_dirs):
            shutil.rmtree(d, ignore_errors=True)
            _dirs.discard(d)


def _on_signal(sig, frame):
    # Unwind through every finally block, then atexit finishes the job.
    signal.signal(sig, signal.SIG_DFL)
    _cleanup()
    print("# interrupted by signal %d" % sig, flush=True)
    raise SystemExit(128 + sig)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def make_tmpdir(prefix="clawd-e2e-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _dirs.add(d)
    return d


def remove_tmpdir(d):
    shutil.rmtree(d, ignore_errors=True)
    _dirs.discard(d)


# ---------------------------------------------------------------------------
# TAP reporting with named subtests.


class Skip(Exception):
    """Raise inside a subtest to report it as skipped with a reason."""


class Tap:
    def __init__(self):
        self.tests = []
        self.failed = 0

    def test(self, name):
        def deco(fn):
            self.tests.append((name, fn))
            return fn
        return deco

    def main(self):
        only = os.environ.get("E2E_ONLY")
        print("1..%d" % len(self.tests), flush=True)
        start = time.monotonic()
        for i, (name, fn) in enumerate(self.tests, 1):
            if only and only not in name:
                print("ok %d - %s # SKIP not selected by E2E_ONLY" % (i, name), flush=True)
                continue
            t0 = time.monotonic()
            try:
                fn()
            except Skip as e:
                print("ok %d - %s # SKIP %s" % (i, name, e), flush=True)
                continue
            except SystemExit:
                raise
            except BaseException as e:  # noqa: B902 — a subtest may fail any way at all
                self.failed += 1
                detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                for line in detail.rstrip().splitlines():
                    print("# " + line, flush=True)
                print("not ok %d - %s" % (i, name), flush=True)
                continue
            finally:
                _cleanup_stray()
            print("# %.2fs" % (time.monotonic() - t0), flush=True)
            print("ok %d - %s" % (i, name), flush=True)
        print("# %d failed of %d, %.1fs" % (self.failed, len(self.tests), time.monotonic() - start),
              flush=True)
        _cleanup()
        sys.exit(1 if self.failed else 0)


def _cleanup_stray():
    """A subtest that failed mid-way may leave clawd running: kill it before the next one."""
    _kill_tracked()
    for p in list(_procs):
        try:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        except Exception:
            pass
        _procs.discard(p)
    for b in list(Backend.live):
        b.close()


def note(msg):
    for line in str(msg).splitlines():
        print("# " + line, flush=True)


def eq(got, want, what=""):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what or "value", got, want))


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def wait_for(pred, timeout=5.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------
# Deterministic bulk data: a 64 KiB pattern repeated, so both ends can hash
# gigabytes without keeping them.

_BLOCK = hashlib.sha256(b"openclaw").digest() * 2048  # 64 KiB


def pattern_chunks(n, block=_BLOCK):
    while n > 0:
        k = min(n, len(block))
        yield block[:k] if k < len(block) else block
        n -= k


def pattern_sha256(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# HTTP/1.1 message reading shared by the backend and the client.


class Closed(Exception):
    """The peer closed before a complete message arrived."""


class Reader:
    """Buffered reads from a socket with an overall deadline per call."""

    def __init__(self, sock, timeout=5.0):
        self.sock = sock
        self.buf = bytearray()
        self.timeout = timeout
        self.eof = False
        self.total = 0  # bytes received so far

    def _fill(self, deadline):
        if self.eof:
            raise Closed("connection closed")
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("read timed out")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(262144)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            raise Closed("connection closed")
        self.total += len(d)
        self.buf += d

    def read_until(self, sep, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (sep, limit))
            self._fill(deadline)

    def read_some(self, deadline, maxn):
        if not self.buf:
            self._fill(deadline)
        out = bytes(self.buf[:maxn])
        del self.buf[:maxn]
        return out

    def read_exact(self, n, deadline, sink):
        while n > 0:
            d = self.read_some(deadline, n)
            sink(d)
            n -= len(d)

    def read_to_eof(self, deadline, sink):
        while True:
            if self.buf:
                sink(bytes(self.buf))
                self.buf.clear()
            try:
                self._fill(deadline)
            except Closed:
                return

    def read_chunked(self, deadline, sink):
        """Reads a chunked body; sink gets the data; returns the trailer header pairs."""
        while True:
            line = self.read_until(b"\r\n", deadline, 65536)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                trailers = []
                while True:
                    t = self.read_until(b"\r\n", deadline, 65536)
                    if t == b"\r\n":
                        return trailers
                    n, _, v = t[:-2].partition(b":")
                    trailers.append((n.decode("latin-1"), v.strip().decode("latin-1")))
            self.read_exact(size, deadline, sink)
            crlf = self.read_until(b"\r\n", deadline, 2)
            if crlf != b"\r\n":
                raise AssertionError("chunk data not followed by CRLF")


def metrics_scrape(target):
    """The body of GET /metrics from clawd's admin listener (a Clawd or a port), asserting 200."""
    port = target if isinstance(target, int) else int(target.config["admin"]["address"].rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    eq(head.split(b"\r\n")[0].split()[1], b"200", "/metrics status")
    return body.decode()


def metrics_sample(text, name, **labels):
    """The value of one series of a scrape (exact label set), None when absent."""
    for ln in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", ln)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(4))
    return None


def parse_head(raw):
    """Splits a message head into (start-line parts, [(name, value)...])."""
    lines = raw.decode("latin-1").split("\r\n")
    start = lines[0]
    headers = []
    for ln in lines[1:]:
        if not ln:
            continue
        n, _, v = ln.partition(":")
        headers.append((n, v.strip(" \t")))
    return start, headers


def hget(headers, name, default=None):
    name = name.lower()
    for n, v in headers:
        if n.lower() == name:
            return v
    return default


def hall(headers, name):
    name = name.lower()
    return [v for n, v in headers if n.lower() == name]


# ---------------------------------------------------------------------------
# Backends.


class Request:
    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        u = urllib.parse.urlsplit(target)
        self.path = u.path
        self.query = dict(urllib.parse.parse_qsl(u.query))
        self.body_len = 0
        self.body_sha256 = None
        self.body = b""  # kept only when small
        self.trailers = []
        self.complete = False


class Backend:
    """
    A raw-socket HTTP/1.1 server in threads of the test process.

    mode (the default behaviour, overridable per request by query parameters):
      echo     200 with a JSON description of the request (the default)
      fixed    200 with `size` bytes of the pattern (query: size=N)
      chunked  200 chunked, a few chunks plus trailers (query: chunked=1)
      slow     sleep `delay` seconds, then echo (query: sleep_ms=N)
      close    read the request head, close without answering (query: close=1)
      hold     send the echo response, then keep the connection open without reading
      partial  announce `size` bytes, send half of them, stall (query: partial=1)
      raw      send the canned bytes self.raw[NAME] and close (query: raw=NAME); a list
               of bytes and numbers sends the parts with pauses (seconds) between
    Query flags on echo: hints=1 sends a 103 first; closeafter=1 closes after
    answering without announcing it.
      status   answer `status` with no body for 204/304 (query: status=N)
    Counters: connections (accepted), requests (heads read), complete (heads
    and whole bodies read), raw_bytes (every byte received).
    """

    live = set()

    def __init__(self, mode="echo", name=None, size=0, delay=0.0, status=200, backlog=128,
                 keep_alive=True, extra_headers=(), accept=True):
        self.mode = mode
        self.size = size
        self.delay = delay
        self.status = status
        self.keep_alive = keep_alive
        self.extra_headers = list(extra_headers)
        self.raw = {}  # canned responses for ?raw=NAME
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.complete = 0
        self.raw_bytes = 0
        self.seen = []  # Request objects, in arrival order
        self.errors = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.name = name or "be-%d" % self.port
        self.closed = False
        self.conns = set()
        self.release = threading.Event()
        Backend.live.add(self)
        if accept:
            self.thread = threading.Thread(target=self._accept_loop, daemon=True)
            self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.release.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        Backend.live.discard(self)

    def counts(self):
        with self.lock:
            return dict(connections=self.connections, requests=self.requests,
                        complete=self.complete, raw_bytes=self.raw_bytes)

    def _accept_loop(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    class _CountingSock:
        def __init__(self, be, s):
            self.be, self.s = be, s

        def recv(self, n):
            d = self.s.recv(n)
            with self.be.lock:
                self.be.raw_bytes += len(d)
            return d

        def settimeout(self, t):
            self.s.settimeout(t)

    def _serve(self, c):
        rd = Reader(self._CountingSock(self, c))
        try:
            while not self.closed:
                try:
                    head = rd.read_until(b"\r\n\r\n", time.monotonic() + 3600, 1 << 20)
                except (Closed, OSError):
                    return
                start, headers = parse_head(head)
                parts = start.split(" ")
                if len(parts) != 3:
                    self.errors.append("bad request line %r" % start)
                    return
                req = Request(parts[0], parts[1], parts[2], headers)
                with self.lock:
                    self.requests += 1
                    self.seen.append(req)
                mode = self._mode_for(req)
                if mode == "close":
                    return
                if not self._read_body(rd, req):
                    return
                with self.lock:
                    self.complete += 1
                if not self._respond(c, req, mode):
                    return
        except Exception as e:  # a backend bug must show up in the test, not vanish
            if not self.closed:
                self.errors.append("%s: %s" % (type(e).__name__, e))
        finally:
            with self.lock:
                self.conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def _mode_for(self, req):
        q = req.query
        if "close" in q:
            return "close"
        if "raw" in q:
            return "raw"
        if "partial" in q:
            return "partial"
        if "status" in q:
            return "status"
        if "size" in q:
            return "fixed"
        if "chunked" in q:
            return "chunked"
        if "sleep_ms" in q:
            return "slow"
        if "hold" in q:
            return "hold"
        return self.mode

    def _read_body(self, rd, req):
        h = hashlib.sha256()
        small = bytearray()

        def sink(d):
            h.update(d)
            req.body_len += len(d)
            if len(small) < 65536:
                small.extend(d[:65536 - len(small)])

        te = hget(req.headers, "transfer-encoding")
        cl = hget(req.headers, "content-length")
        deadline = time.monotonic() + 120
        try:
            if te and "chunked" in te.lower():
                req.trailers = rd.read_chunked(deadline, sink)
            elif cl is not None:
                rd.read_exact(int(cl), deadline, sink)
        except (Closed, OSError, ValueError):
            return False
        req.body_sha256 = h.hexdigest()
        req.body = bytes(small)
        req.complete = True
        return True

    def _head(self, status, headers, reason=None):
        reasons = {200: "OK", 204: "No Content", 304: "Not Modified", 404: "Not Found",
                   500: "Internal Server Error"}
        out = "HTTP/1.1 %d %s\r\n" % (status, reason or reasons.get(status, "Status"))
        for n, v in headers + self.extra_headers:
            out += "%s: %s\r\n" % (n, v)
        if not self.keep_alive:
            out += "Connection: close\r\n"
        return (out + "\r\n").encode("latin-1")

    def echo_json(self, req):
        return json.dumps({
            "backend": self.name,
            "method": req.method,
            "target": req.target,
            "version": req.version,
            "headers": req.headers,
            "body_len": req.body_len,
            "body_sha256": req.body_sha256,
            "trailers": req.trailers,
        }).encode()

    def _respond(self, c, req, mode):
        q = req.query
        if mode == "slow":
            ms = int(q.get("sleep_ms", self.delay * 1000))
            if self.release.wait(ms / 1000.0):
                return False
            mode = "echo"
        if mode == "status":
            st = int(q.get("status", self.status))
            hdrs = [("X-Backend", self.name)]
            if st in (204, 304) or st < 200:
                c.sendall(self._head(st, hdrs))
            else:
                body = self.echo_json(req)
                hdrs += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                c.sendall(self._head(st, hdrs) + (b"" if req.method == "HEAD" else body))
        elif mode == "fixed":
            n = int(q.get("size", self.size))
            c.sendall(self._head(200, [("X-Backend", self.name), ("Content-Length", str(n)),
                                       ("Content-Type", "application/octet-stream")]))
            if req.method != "HEAD":
                for chunk in pattern_chunks(n):
                    c.sendall(chunk)
        elif mode == "raw":
            # Canned bytes (self.raw[name]), then close unless the name ends in "+hold".
            name = q.get("raw", "")
            canned = self.raw[name]
            for part in canned if isinstance(canned, list) else [canned]:
                if isinstance(part, (int, float)):
                    time.sleep(part)  # a pause between two parts of the response
                else:
                    c.sendall(part)
            if name.endswith("+hold"):
                self.release.wait(60)
            return False
        elif mode == "partial":
            # Announces `size` bytes, sends half, then stalls until released.
            n = int(q.get("size", self.size or 1000))
            c.sendall(self._head(200, [("X-Backend", self.name), ("Content-Length", str(n))])
                      + b"p" * (n // 2))
            self.release.wait(60)
            return False
        elif mode == "chunked":
            body = self.echo_json(req)
            c.sendall(self._head(200, [("X-Backend", self.name),
                                       ("Transfer-Encoding", "chunked"),
                                       ("Trailer", "X-Checksum")]))
            if req.method != "HEAD":
                out = b""
                for i in range(0, len(body), 7):
                    part = body[i:i + 7]
                    out += b"%x\r\n%s\r\n" % (len(part), part)
                out += b"0\r\nX-Checksum: %s\r\n\r\n" % hashlib.sha256(body).hexdigest().encode()
                c.sendall(out)
        else:  # echo, hold
            body = self.echo_json(req)
            if "hints" in q:
                c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
            c.sendall(self._head(200, [("X-Backend", self.name),
                                       ("Content-Type", "application/json"),
                                       ("Content-Length", str(len(body)))])
                      + (b"" if req.method == "HEAD" else body))
            if mode == "hold":
                self.release.wait(60)
                return False
            if "closeafter" in q:
                return False  # closes a connection it announced as reusable
        return self.keep_alive


class Blackhole:
    """
    A listener that never accepts, with its accept queue filled so that the
    kernel drops further SYNs: connects to it hang until they time out.
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.fillers = []
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)
        time.sleep(0.1)

    def is_black(self, wait=0.5):
        """True when a fresh connect does not complete within wait seconds."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(wait)
        try:
            s.connect(("127.0.0.1", self.port))
            return False
        except (socket.timeout, TimeoutError):
            return True
        except OSError:
            return False
        finally:
            s.close()

    def close(self):
        for s in self.fillers:
            s.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ---------------------------------------------------------------------------
# YAML writer (block style, so error messages have meaningful lines).


def _yscalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def to_yaml(obj, indent=0):
    pad = "  " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, k))
                out.append(to_yaml(v, indent + 1))
            elif isinstance(v, list):
                out.append("%s%s: []" % (pad, k))
            else:
                out.append("%s%s: %s" % (pad, k, _yscalar(v)))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict) and v:
                sub = to_yaml(v, indent + 1).splitlines()
                out.append("%s- %s" % (pad, sub[0].lstrip()))
                out.extend(sub[1:])
            elif isinstance(v, list):
                out.append("%s- %s" % (pad, json.dumps(v)))
            else:
                out.append("%s- %s" % (pad, _yscalar(v)))
    return "\n".join(out)


def simple_config(*backends, listeners=1, **extra):
    """One listener, one upstream over the given backends, one catch-all route."""
    cfg = {
        "workers": 1,
        "listeners": [{"name": "web%d" % i if i else "web", "address": "127.0.0.1:%d" % free_port()}
                      for i in range(listeners)],
        "upstreams": [{"name": "pool", "servers": [b.addr if hasattr(b, "addr") else b
                                                   for b in backends]}],
        "routes": [{"name": "default", "upstream": "pool"}],
    }
    cfg.update(extra)
    return cfg


# ---------------------------------------------------------------------------
# The clawd process.


SAN_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                "SUMMARY: UndefinedBehaviorSanitizer")


class Clawd:
    """
    Runs clawd on a config (a dict, rendered to YAML, or YAML text).  The
    access log goes to a file in the temp dir unless the config sets one.
    On leaving the with-block: SIGTERM, then asserts exit status 0 within
    stop_timeout seconds; SIGKILL on every failure path.
    """

    def __init__(self, config, stop_timeout=None, wait_listen=True, args=()):
        self.dir = make_tmpdir()
        self.config = config
        if isinstance(config, dict):
            config = self._with_defaults(config)
            self.listen_ports = [int(l["address"].rsplit(":", 1)[1]) for l in config["listeners"]]
            text = to_yaml(config) + "\n"
            drain = config.get("drain_timeout")
        else:
            text = config
            self.listen_ports = [int(p) for p in re.findall(r"address:\s*\"?127\.0\.0\.1:(\d+)", text)]
            drain = None
        self.access_log = os.path.join(self.dir, "access.log")
        self.yaml = text
        self.path = os.path.join(self.dir, "clawd.yaml")
        with open(self.path, "w") as f:
            f.write(text)
        self.port = self.listen_ports[0] if self.listen_ports else None
        self.stop_timeout = stop_timeout or (parse_duration(drain) + 3 if drain else 13)
        self.wait_listen = wait_listen
        self.args = list(args)
        self.proc = None
        self.stopped = False
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stdout_path = os.path.join(self.dir, "stdout")

    def _with_defaults(self, config):
        config = dict(config)
        config.setdefault("access_log", os.path.join(self.dir, "access.log"))
        config.setdefault("workers", 1)
        # A private control socket: several clawds (and test runs) share this host.
        config.setdefault("control", {"socket": os.path.join(self.dir, "ctl.sock")})
        return config

    def rewrite(self, config):
        """Replaces the config file atomically (reload tests) with the defaults the first
        one got, so sections the test did not change compare equal."""
        with open(self.path + ".tmp", "w") as f:
            f.write(to_yaml(self._with_defaults(config)) + "\n")
        os.rename(self.path + ".tmp", self.path)

    def start(self):
        self.err_f = open(self.stderr_path, "wb")
        self.out_f = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([CLAWD, "-c", self.path] + self.args, stdin=subprocess.DEVNULL,
                                     stdout=self.out_f, stderr=self.err_f)
        _procs.add(self.proc)
        if self.wait_listen:
            deadline = time.monotonic() + 5
            for p in self.listen_ports:
                while True:
                    if self.proc.poll() is not None:
                        raise AssertionError("clawd exited with %s at start-up\n%s\nconfig:\n%s"
                                             % (self.proc.returncode, self.stderr(), self.yaml))
                    s = socket.socket()
                    s.settimeout(0.2)
                    try:
                        s.connect(("127.0.0.1", p))
                        s.close()
                        break
                    except OSError:
                        s.close()
                    if time.monotonic() > deadline:
                        self.kill()
                        raise AssertionError("clawd did not listen on %d within 5 s\n%s"
                                             % (p, self.stderr()))
                    time.sleep(0.02)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def sanitizer_report(self):
        e = self.stderr()
        return e if any(p in e for p in SAN_PATTERNS) else None

    def log_lines(self):
        try:
            with open(self.access_log) as f:
                return [json.loads(ln) for ln in f if ln.strip()]
        except FileNotFoundError:
            return []

    def wait_log(self, n, timeout=3.0):
        """Waits until the access log holds at least n lines; returns them."""
        return wait_for(lambda: (lambda l: l if len(l) >= n else None)(self.log_lines()),
                        timeout, what="%d access log lines" % n)

    def kill(self):
        # After a binary upgrade the clawd serving is the one the pid file names.
        pf = self.config.get("pid_file") if isinstance(self.config, dict) else None
        if pf:
            try:
                with open(pf) as f:
                    track_pid(int(f.read().strip()))
            except (OSError, ValueError):
                pass
            _kill_tracked()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        _procs.discard(self.proc)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=None):
        """SIGTERM; asserts exit 0 within timeout. Returns the seconds it took."""
        if self.stopped:
            return 0.0
        self.stopped = True
        timeout = timeout or self.stop_timeout
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("clawd did not exit within %.1fs of SIGTERM\n%s"
                                 % (timeout, self.stderr()))
        took = time.monotonic() - t0
        _procs.discard(self.proc)
        san = self.sanitizer_report()
        if san:
            raise AssertionError("sanitizer report from clawd:\n" + san)
        if rc != 0:
            raise AssertionError("clawd exited with %s, want 0\n%s" % (rc, self.stderr()))
        return took

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, et, ev, tb):
        try:
            if et is None:
                self.stop()
            else:
                self.kill()
                san = self.sanitizer_report()
                if san:
                    note("clawd sanitizer output:\n" + san)
                err = self.stderr()
                if err.strip():
                    note("clawd stderr (tail):\n" + "\n".join(err.splitlines()[-30:]))
        finally:
            self._teardown()
        return False

    def _teardown(self):
        self.kill()
        for f in ("err_f", "out_f"):
            if hasattr(self, f):
                getattr(self, f).close()
        remove_tmpdir(self.dir)


def parse_duration(s):
    if isinstance(s, (int, float)):
        return float(s)
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", str(s))
    if not m:
        return 10.0
    n = int(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]


def run_clawd(args, timeout=10):
    """Runs clawd to completion (e.g. --check); returns (rc, stdout, stderr)."""
    p = subprocess.Popen([CLAWD] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    _procs.add(p)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _procs.discard(p)
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of pid every interval seconds in a thread; .peak_kib after stop()."""

    def __init__(self, pid, interval=0.1):
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            v = rss_kib(self.pid)
            if v is not None:
                self.peak_kib = max(self.peak_kib, v)
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


# ---------------------------------------------------------------------------
# Raw client.


class Response:
    def __init__(self, version, status, reason, headers, body, trailers=(), interim=()):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.trailers = list(trailers)
        self.interim = list(interim)  # 1xx responses seen before this one

    def header(self, name, default=None):
        return hget(self.headers, name, default)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r headers=%r body=%r>" % (self.status, self.reason, self.headers,
                                                        self.body[:200])


class Client:
    """One TCP connection to clawd: send exact bytes, read responses."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rd = Reader(self.sock)
        self.timeout = timeout

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def consumed(self):
        """Bytes received and parsed so far (excludes read-ahead still buffered)."""
        return self.rd.total - len(self.rd.buf)

    def response(self, head_request=False, timeout=None, sink=None, keep_interim=True):
        """Reads one final response (1xx ones are collected in .interim)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        interim = []
        while True:
            raw = self.rd.read_until(b"\r\n\r\n", deadline)
            start, headers = parse_head(raw)
            ver, _, rest = start.partition(" ")
            code, _, reason = rest.partition(" ")
            status = int(code)
            if 100 <= status < 200:
                interim.append((status, headers))
                continue
            break
        body = bytearray()
        if sink is None:
            def sink(d):
                body.extend(d)
        trailers = []
        te = hget(headers, "transfer-encoding")
        cl = hget(headers, "content-length")
        if head_request or status in (204, 304):
            pass
        elif te and te.lower().endswith("chunked"):
            trailers = self.rd.read_chunked(deadline, sink)
        elif cl is not None:
            self.rd.read_exact(int(cl), deadline, sink)
        else:
            self.rd.read_to_eof(deadline, sink)
        return Response(ver, status, reason, headers, bytes(body), trailers, interim)

    def read_interim(self, timeout=None):
        """Reads exactly one response head (for 100 Continue); returns (status, headers)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = self.rd.read_until(b"\r\n\r\n", deadline)
        start, headers = parse_head(raw)
        return int(start.split(" ")[1]), headers

    def closed(self, timeout=2.0):
        """True when the peer closes (EOF or reset) within timeout with no more data."""
        deadline = time.monotonic() + timeout
        if self.rd.buf:
            return False
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                d = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not d:
                return True
            self.rd.buf += d
            self.rd.total += len(d)
            return False
        return False

    def nothing_within(self, t):
        """True when nothing at all (no data, no close) arrives within t seconds."""
        self.sock.settimeout(t)
        try:
            d = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return True
        except OSError:
            return False
        if d:
            self.rd.buf += d
            self.rd.total += len(d)
        return False


def request(port, data, head_request=False, timeout=5.0):
    """One request on a fresh connection; returns the Response."""
    with Client(port, timeout=timeout) as c:
        c.send(data)
        return c.response(head_request=head_request)


def get(port, path="/", host="example.test", headers=(), method="GET", body=None, timeout=5.0):
    h = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, host)
    for n, v in headers:
        h += "%s: %s\r\n" % (n, v)
    data = h.encode("latin-1")
    if body is not None:
        data += b"Content-Length: %d\r\n\r\n" % len(body) + body
    else:
        data += b"\r\n"
    return request(port, data, head_request=(method == "HEAD"), timeout=timeout)


def curl(args, timeout=60):
    """Runs curl; returns (rc, stdout bytes, stderr text)."""
    p = subprocess.Popen(["curl", "-sS"] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    _procs.add(p)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _procs.discard(p)
    return p.returncode, out, err.decode("utf-8", "replace")
