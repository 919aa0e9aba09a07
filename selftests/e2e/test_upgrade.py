# selftests/e2e/test_upgrade.py — zero-downtime binary upgrade: clawctl upgrade and SIGUSR2 under load, refusals keep the old clawd.
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLAWD, Backend, Clawd, Client, Tap, check, eq, free_port, get,  # noqa: E402
                     make_tmpdir, note, remove_tmpdir, to_yaml, track_pid, wait_for)

t = Tap()
CLAWCTL = os.path.join(os.path.dirname(CLAWD), "clawctl")

# The new clawd is the old one's child: when the old one exits it is re-parented
# to us, so its exit status can be collected like the first one's.
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def ctl(cd, *args, timeout=30):
    p = subprocess.run([CLAWCTL, "--socket", os.path.join(cd.dir, "ctl.sock")] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def status_pid(cd):
    rc, out, err = ctl(cd, "--json", "status")
    eq(rc, 0, "status: " + err)
    return json.loads(out)["pid"]


def pid_file_pid(path):
    with open(path) as f:
        return int(f.read().strip())


def reap(pid, timeout):
    """Waits for a (re-parented) child to exit; returns its exit code, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, st = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(st)
        time.sleep(0.02)
    return None


def config(be, piddir, workers=2):
    return {
        "workers": workers,
        "drain_timeout": "5s",
        "pid_file": os.path.join(piddir, "clawd.pid"),
        "admin": {"address": "127.0.0.1:%d" % free_port()},
        "listeners": [{"name": "a", "address": "127.0.0.1:%d" % free_port()},
                      {"name": "b", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [{"name": "pool", "servers": [be.addr]}],
        "routes": [{"name": "default", "upstream": "pool"}],
    }


def stop_pid(pid):
    """SIGTERM to the clawd serving now (not the harness's child any more); asserts exit 0."""
    os.kill(pid, signal.SIGTERM)
    rc = reap(pid, 15)
    if rc is None:
        os.kill(pid, signal.SIGKILL)
        reap(pid, 5)
    eq(rc, 0, "exit status of clawd pid %d after SIGTERM" % pid)


class Load:
    """
    Bounded client load on both listeners: keep-alive connections and a new
    connection per request. Every failure counts as an error, with no retry:
    a draining clawd keeps an idle keep-alive connection open and answers its
    next request with "Connection: close" (issue #6), so even the race HTTP/1.1
    leaves to clients (RFC 9112 9.3.1: a server closing an idle connection as
    the next request arrives) must not happen.
    """

    def __init__(self, ports, seconds):
        self.ports = ports
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.ok = 0
        self.errors = []
        self.non2xx = []
        self.closes = 0  # keep-alive connections ended by "Connection: close"
        self.threads = []

    def _count(self, r):
        with self.lock:
            if 200 <= r.status < 300:
                self.ok += 1
            else:
                self.non2xx.append(r.status)

    def _fail(self, what, e):
        with self.lock:
            self.errors.append("%s: %r" % (what, e))

    def _fresh(self, port):
        while time.monotonic() < self.deadline:
            try:
                self._count(get(port, "/fresh", timeout=10))
            except Exception as e:  # noqa: BLE001 — every failure is counted
                self._fail("new connection to %d" % port, e)
            time.sleep(0.005)

    def _keepalive(self, port):
        c = None
        used = 0
        while time.monotonic() < self.deadline:
            req = b"GET /ka HTTP/1.1\r\nHost: upgrade.test\r\n\r\n"
            try:
                if c is None:
                    c, used = Client(port, timeout=10), 0
                c.send(req)
                r = c.response()
                used += 1
                self._count(r)
                if (r.header("connection") or "").lower() == "close":
                    with self.lock:
                        self.closes += 1
                    c.close()
                    c = None
            except Exception as e:  # noqa: BLE001
                self._fail("keep-alive on %d (request %d on it)" % (port, used + 1), e)
                if c:
                    c.close()
                c = None
            time.sleep(0.002)
        if c:
            c.close()

    def start(self):
        for p in self.ports:
            for fn in (self._keepalive, self._keepalive, self._fresh):
                th = threading.Thread(target=fn, args=(p,), daemon=True)
                th.start()
                self.threads.append(th)
        return self

    def join(self):
        for th in self.threads:
            th.join(30)
        check(not any(th.is_alive() for th in self.threads), "load threads ended")


def upgrade_under_load(cd, pidfile, old, how):
    """Runs the load, upgrades at about 1.5 s; returns the new pid after checking everything."""
    load = Load(cd.listen_ports, 4.0).start()
    time.sleep(1.5)
    if how == "ctl":
        rc, out, err = ctl(cd, "upgrade")
        eq(rc, 0, "clawctl upgrade exit status (%s%s)" % (out, err))
        check("took over" in out, "clawctl upgrade says who took over: " + out)
    else:
        os.kill(old, signal.SIGUSR2)
    wait_for(lambda: pid_file_pid(pidfile) != old, 15, what="the pid file to name the new clawd")
    new = pid_file_pid(pidfile)
    track_pid(new)
    check(new != old, "a new pid")
    # The old process stops accepting, drains and exits 0.
    if old == cd.pid:
        eq(cd.wait_exit(15), 0, "old clawd (the harness's child) exit status")
    else:
        eq(reap(old, 15), 0, "old clawd pid %d exit status" % old)
    load.join()
    note("%s: %d requests ok, %d keep-alive connections ended by Connection: close"
         % (how, load.ok, load.closes))
    eq(load.errors[:5], [], "connection errors")
    eq(load.non2xx[:5], [], "non-2xx answers")
    check(load.ok > 100, "the load ran (%d requests)" % load.ok)
    check(load.closes > 0, "the old clawd told its keep-alive clients Connection: close")
    # The new one serves, answers the control socket at the same path, and the admin listener.
    eq(status_pid(cd), new, "pid in clawctl status")
    for p in cd.listen_ports:
        eq(get(p, "/after").status, 200, "listener %d after the upgrade" % p)
    admin = int(cd.config["admin"]["address"].rsplit(":", 1)[1])
    eq(get(admin, "/readyz").status, 200, "admin /readyz after the upgrade")
    return new


@t.test("clawctl upgrade under load: no errors, the new pid serves, the old exits, twice")
def _():
    piddir = make_tmpdir()
    try:
        with Backend() as be, Clawd(config(be, piddir)) as cd:
            pidfile = cd.config["pid_file"]
            # Written just after the listeners come up, which is all the harness waits for.
            wait_for(lambda: os.path.exists(pidfile), 5, what="the pid file")
            eq(pid_file_pid(pidfile), cd.pid, "pid file before")
            first = upgrade_under_load(cd, pidfile, cd.pid, "ctl")
            second = upgrade_under_load(cd, pidfile, first, "ctl")
            check(second != first, "a third pid")
            eq(pid_file_pid(pidfile), second, "pid file after two upgrades")
            stop_pid(second)
            check(not os.path.exists(pidfile), "pid file removed by the last clawd's stop")
            check(not os.path.exists(os.path.join(cd.dir, "ctl.sock")), "control socket removed")
    finally:
        remove_tmpdir(piddir)


@t.test("SIGUSR2 upgrades the binary under load")
def _():
    piddir = make_tmpdir()
    try:
        with Backend() as be, Clawd(config(be, piddir)) as cd:
            new = upgrade_under_load(cd, cd.config["pid_file"], cd.pid, "SIGUSR2")
            stop_pid(new)
    finally:
        remove_tmpdir(piddir)


@t.test("a failed upgrade is refused with the reason and the old clawd keeps serving")
def _():
    piddir = make_tmpdir()
    try:
        with Backend() as be:
            cfg = config(be, piddir)
            with Clawd(cfg) as cd:
                pidfile = cfg["pid_file"]
                # Bad arguments never reach clawd.
                for args, want in ((["--binary"], "needs a value"), (["--timeout", "soon"], "--timeout"),
                                   (["--bogus"], "unknown option"),
                                   (["--binary", os.path.join(piddir, "nope")], "No such file")):
                    rc, out, err = ctl(cd, "upgrade", *args)
                    eq(rc, 2, "exit status for %r" % args)
                    check(err.startswith("clawctl: ") and want in err, "message for %r: %r" % (args, err))
                # A binary that exits at once.
                rc, out, err = ctl(cd, "upgrade", "--binary", "/bin/false")
                eq(rc, 1, "clawctl exit status for /bin/false: " + out + err)
                check("exited with status 1" in err, "reason names the exit status: " + err)
                # A new configuration the sockets cannot serve: fewer workers than sockets.
                with open(cd.path, "w") as f:
                    f.write(to_yaml(dict(cfg, workers=1, access_log=cd.access_log,
                                         control={"socket": os.path.join(cd.dir, "ctl.sock")})) + "\n")
                rc, out, err = ctl(cd, "upgrade")
                eq(rc, 1, "clawctl exit status for too few workers: " + out + err)
                check("keep workers >= 2" in err, "reason names the fix: " + err)
                # A binary that never gets ready: stopped at the timeout.
                slow = os.path.join(piddir, "slow.sh")
                with open(slow, "w") as f:
                    f.write("#!/bin/sh\nexec sleep 30\n")
                os.chmod(slow, 0o755)
                t0 = time.monotonic()
                rc, out, err = ctl(cd, "upgrade", "--binary", slow, "--timeout", "1s")
                eq(rc, 1, "clawctl exit status for a binary that never gets ready: " + err)
                check("not ready within 1000 ms" in err, "reason names the timeout: " + err)
                check(time.monotonic() - t0 < 10, "the timeout is kept")
                # Still the same process, serving on every listener, owning the pid file and socket.
                eq(status_pid(cd), cd.pid, "pid in status")
                eq(pid_file_pid(pidfile), cd.pid, "pid file")
                for p in cd.listen_ports:
                    eq(get(p, "/still").status, 200, "listener %d still serves" % p)
                check(cd.proc.poll() is None, "old clawd still running")
    finally:
        remove_tmpdir(piddir)


t.main()
