# selftests/e2e/test_sdnotify.py — systemd notify protocol: READY=1 at start, RELOADING=1/READY=1 around SIGHUP, MAINPID=<new pid> on upgrade, STOPPING=1 on stop.
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLAWD, Backend, Clawd, Tap, check, eq, free_port, get,  # noqa: E402
                     make_tmpdir, remove_tmpdir, track_pid, wait_for)

t = Tap()
CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(os.path.dirname(CLAWD), "clawctl")

# The upgraded clawd is the first one's child: re-parented to us when it exits.
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class Notify:
    """A datagram socket standing in for systemd's: path or abstract, set as NOTIFY_SOCKET."""

    def __init__(self, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dir = make_tmpdir()
        if abstract:
            self.name = "@clawd-e2e-notify-%d-%d" % (os.getpid(), free_port())
            self.sock.bind("\0" + self.name[1:])
        else:
            self.name = os.path.join(self.dir, "notify")
            self.sock.bind(self.name)
        self.msgs = []
        self.old = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = self.name  # clawd inherits our environment

    def wait(self, pred, timeout, what):
        """Reads datagrams until one satisfies pred (a dict of its assignments); returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                d = self.sock.recv(4096)
            except (socket.timeout, TimeoutError):
                break
            kv = dict(ln.split("=", 1) for ln in d.decode().split("\n") if "=" in ln)
            self.msgs.append(kv)
            if pred(kv):
                return kv
        raise AssertionError("no %s within %.1fs; got %r" % (what, timeout, self.msgs))

    def close(self):
        if self.old is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        else:
            os.environ["NOTIFY_SOCKET"] = self.old
        self.sock.close()
        remove_tmpdir(self.dir)


def reap(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, st = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(st)
        time.sleep(0.02)
    return None


def config(be, piddir):
    return {
        "workers": 1,
        "drain_timeout": "3s",
        "pid_file": os.path.join(piddir, "clawd.pid"),
        "listeners": [{"name": "a", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [{"name": "pool", "servers": [be.addr]}],
        "routes": [{"name": "default", "upstream": "pool"}],
    }


@t.test("path NOTIFY_SOCKET: READY=1 at start, RELOADING=1 then READY=1 on SIGHUP and on clawctl reload, STOPPING=1 on SIGTERM")
def _():
    n = Notify(abstract=False)
    piddir = make_tmpdir()
    try:
        with Backend() as be, Clawd(config(be, piddir)) as cd:
            n.wait(lambda m: m.get("READY") == "1", 5, "READY=1 at start")
            eq(get(cd.port, "/").status, 200, "serving after READY=1")
            cd.signal(signal.SIGHUP)
            r = n.wait(lambda m: "RELOADING" in m, 5, "RELOADING=1 on SIGHUP")
            eq(r["RELOADING"], "1", "RELOADING value")
            check(int(r.get("MONOTONIC_USEC", "0")) > 0, "MONOTONIC_USEC with RELOADING=1: %r" % r)
            n.wait(lambda m: m.get("READY") == "1", 5, "READY=1 after the reload")
            p = subprocess.run([CLAWCTL, "--socket", os.path.join(cd.dir, "ctl.sock"), "reload"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
            eq(p.returncode, 0, "clawctl reload: %s" % p.stdout.decode("utf-8", "replace"))
            n.wait(lambda m: m.get("RELOADING") == "1", 5, "RELOADING=1 on clawctl reload")
            n.wait(lambda m: m.get("READY") == "1", 5, "READY=1 after clawctl reload")
            cd.signal(signal.SIGTERM)
            cd.stopped = True
            n.wait(lambda m: m.get("STOPPING") == "1", 5, "STOPPING=1 on SIGTERM")
            eq(cd.wait_exit(8), 0, "exit status")
    finally:
        n.close()
        remove_tmpdir(piddir)


@t.test("abstract NOTIFY_SOCKET: the upgraded clawd sends MAINPID=<its pid>; the old one never STOPPING=1")
def _():
    n = Notify(abstract=True)
    piddir = make_tmpdir()
    try:
        with Backend() as be, Clawd(config(be, piddir)) as cd:
            pidfile = cd.config["pid_file"]
            old = cd.pid
            n.wait(lambda m: m.get("READY") == "1", 5, "READY=1 at start")
            os.kill(old, signal.SIGUSR2)
            m = n.wait(lambda m: "MAINPID" in m, 15, "MAINPID= during the upgrade")
            new = int(m["MAINPID"])
            track_pid(new)
            check(new != old, "MAINPID names a new process (%d, old %d)" % (new, old))
            eq(m.get("READY"), "1", "READY=1 with MAINPID")
            # Sent before the old process may exit: it is still running (draining) or just gone.
            wait_for(lambda: open(pidfile).read().strip() == str(new), 10, what="pid file names it")
            eq(cd.wait_exit(10), 0, "old clawd exit status")
            eq(get(cd.port, "/after").status, 200, "the new clawd serves")
            check(not any("STOPPING" in x for x in n.msgs), "old clawd said STOPPING=1: %r" % n.msgs)
            # The service's real stop: the new process says STOPPING=1.
            os.kill(new, signal.SIGTERM)
            n.wait(lambda m: m.get("STOPPING") == "1", 5, "STOPPING=1 from the new clawd")
            eq(reap(new, 10), 0, "new clawd exit status")
    finally:
        n.close()
        remove_tmpdir(piddir)


t.main()
