# selftests/e2e/test_large.py — 100 MiB bodies stream both ways intact while clawd's memory stays flat.
import hashlib
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLAWD, Backend, Clawd, Client, RssSampler, Tap, check, eq, note,  # noqa: E402
                     pattern_chunks, pattern_sha256, simple_config, _procs)

t = Tap()

SIZE = 100 << 20
RSS_LIMIT_KIB = 64 << 10


def sanitized():
    """ASan reserves shadow memory and quarantines frees: RSS bounds mean nothing there."""
    try:
        with open(CLAWD, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def big_config(be):
    cfg = simple_config(be)
    cfg["routes"][0]["max_body"] = 0
    cfg["timeouts"] = {"upstream_response": "60s", "client_body": "60s", "upstream_idle": "60s"}
    return cfg


def check_rss(s, what):
    note("%s: peak VmRSS of clawd %.1f MiB over %d samples" % (what, s.peak_kib / 1024, s.samples))
    check(s.samples >= 1, "no RSS sample taken")
    if sanitized():
        note("sanitizer build: RSS bound not asserted")
        return
    check(s.peak_kib < RSS_LIMIT_KIB, "%s: peak VmRSS %.1f MiB >= 64 MiB" % (what, s.peak_kib / 1024))


WANT = pattern_sha256(SIZE)


@t.test("100 MiB request body (Content-Length) streamed to the backend, RSS < 64 MiB")
def _():
    with Backend() as be, Clawd(big_config(be)) as cd, Client(cd.port, timeout=60) as c, \
            RssSampler(cd.pid) as s:
        t0 = time.monotonic()
        c.send(b"PUT /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % SIZE)
        for chunk in pattern_chunks(SIZE):
            c.send(chunk)
        r = c.response(timeout=60)
        took = time.monotonic() - t0
        eq(r.status, 200, "status")
        j = r.json()
        eq(j["body_len"], SIZE, "bytes at the backend")
        eq(j["body_sha256"], WANT, "sha256 at the backend")
        note("upload took %.2fs" % took)
    check_rss(s, "upload")


@t.test("100 MiB chunked request body streamed to the backend, RSS < 64 MiB")
def _():
    with Backend() as be, Clawd(big_config(be)) as cd, Client(cd.port, timeout=60) as c, \
            RssSampler(cd.pid) as s:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in pattern_chunks(SIZE):
            c.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        c.send(b"0\r\n\r\n")
        r = c.response(timeout=60)
        eq(r.status, 200, "status")
        j = r.json()
        eq(j["body_len"], SIZE, "bytes at the backend")
        eq(j["body_sha256"], WANT, "sha256 at the backend")
    check_rss(s, "chunked upload")


@t.test("100 MiB response body streamed back (curl), RSS < 64 MiB")
def _():
    with Backend() as be, Clawd(big_config(be)) as cd, RssSampler(cd.pid) as s:
        p = subprocess.Popen(["curl", "-sS", "--fail", "--max-time", "60",
                              "http://127.0.0.1:%d/dl?size=%d" % (cd.port, SIZE)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _procs.add(p)
        h = hashlib.sha256()
        n = 0
        t0 = time.monotonic()
        while True:
            d = p.stdout.read(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
        err = p.stderr.read().decode()
        rc = p.wait(timeout=10)
        _procs.discard(p)
        note("download took %.2fs" % (time.monotonic() - t0))
        eq(rc, 0, "curl exit status (%s)" % err.strip())
        eq(n, SIZE, "bytes received")
        eq(h.hexdigest(), WANT, "sha256 received")
    check_rss(s, "download")


@t.test("100 MiB response to a slow reader: backpressure keeps RSS < 64 MiB")
def _():
    with Backend() as be, Clawd(big_config(be)) as cd, Client(cd.port, timeout=60) as c, \
            RssSampler(cd.pid) as s:
        c.send(b"GET /dl?size=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % SIZE)
        time.sleep(1.0)  # the client reads nothing for a second: clawd must not buffer
        h = hashlib.sha256()
        r = c.response(timeout=60, sink=h.update)
        eq(r.status, 200, "status")
        eq(h.hexdigest(), WANT, "sha256 received")
    check_rss(s, "slow reader")


t.main()
