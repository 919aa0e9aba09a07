# selftests/e2e/test_keys.py — API keys end to end: clawctl keys, curl through clawd to a backend, revoke/rotate/scopes, no secret leaks.
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (Backend, Clawd, Tap, check, eq, free_port, make_tmpdir,  # noqa: E402
                     remove_tmpdir, run_clawd)

t = Tap()
CLAWCTL = os.environ.get("CLAWCTL") or os.path.join(os.path.dirname(harness.CLAWD), "clawctl")
KEY_RE = re.compile(r"^ocl_[a-z2-7]{12}_[a-z2-7]{51}[aq]$")


def config(be, state, **route_extra):
    sock = os.path.join(state, "ctl.sock")
    api = {"name": "api", "match": {"path_prefix": "/api/"}, "upstream": "pool",
           "auth": {"type": "api_key", "header": "X-API-Key",
                    "upstream_headers": {"key_id": "X-Key-Id", "tier": "X-Key-Tier"}}}
    api.update(route_extra)
    return {
        "workers": 2,
        "state_dir": state,
        "control": {"socket": sock},
        "tiers": [{"name": "free", "rate": "1000/s", "burst": 1000, "quota": {"day": 100000}},
                  {"name": "tiny", "quota": {"day": 5}}],
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port()}],
        "upstreams": [{"name": "pool", "servers": [be.addr]}],
        "routes": [
            api,
            {"name": "admin", "match": {"path_prefix": "/admin/"}, "upstream": "pool",
             "auth": "api_key"},
            {"name": "bearer", "match": {"path_prefix": "/bearer/"}, "upstream": "pool",
             "auth": {"type": "api_key", "header": "Authorization: Bearer"}},
            {"name": "query", "match": {"path_prefix": "/query/"}, "upstream": "pool",
             "auth": {"type": "api_key", "query": "api_key"}},
            {"name": "open", "match": {"path_prefix": "/open/"}, "upstream": "pool"},
        ],
    }


def ctl(cd, *args, want_rc=0):
    p = subprocess.run([CLAWCTL, "-s", cd.config["control"]["socket"]] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       timeout=10)
    if want_rc is not None and p.returncode != want_rc:
        raise AssertionError("clawctl %s: exit %d, want %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), p.returncode, want_rc, p.stdout.decode(),
                                p.stderr.decode()))
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def ctl_json(cd, *args):
    return json.loads(ctl(cd, "--json", *args)[1])


def curl(cd, path, headers=(), want_headers=False):
    """Returns (status, response headers dict lower-cased, body)."""
    cmd = ["curl", "-s", "-i", "--max-time", "5", "http://127.0.0.1:%d%s" % (cd.port, path)]
    for h in headers:
        cmd += ["-H", h]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    raw = p.stdout.decode("latin-1")
    head, _, body = raw.partition("\r\n\r\n")
    lines = head.split("\r\n")
    check(lines and lines[0].startswith("HTTP/1.1 "), "curl %s: no response (%r)" % (path, raw))
    hdrs = {}
    for ln in lines[1:]:
        n, _, v = ln.partition(":")
        hdrs[n.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, body


def create(cd, tier="free", name="alice", *extra):
    r = ctl_json(cd, "keys", "create", "--name", name, "--tier", tier, *extra)
    check(KEY_RE.match(r["key"]), "key %r does not match the documented format" % r["key"])
    check(r["key"].startswith("ocl_%s_" % r["id"]), "the key carries its id")
    return r["id"], r["key"]


class State:
    def __init__(self):
        self.dir = make_tmpdir("clawd-keys-")

    def __enter__(self):
        return self.dir

    def __exit__(self, *a):
        remove_tmpdir(self.dir)


@t.test("create → works: upstream gets key id and tier, never the key; 401 without or with a bad key")
def _():
    with State() as st, Backend() as be, Clawd(config(be, st)) as cd:
        kid, key = create(cd)
        s, h, _ = curl(cd, "/api/x")
        eq(s, 401, "no key")
        check(h.get("www-authenticate", "").startswith("ApiKey "), "WWW-Authenticate on 401: %r" % h)
        s, _, _ = curl(cd, "/api/x", ["X-API-Key: ocl_aaaaaaaaaaaa_" + "a" * 52])
        eq(s, 401, "unknown key")
        s, _, _ = curl(cd, "/api/x", ["X-API-Key: " + key[:-2] + ("aa" if key[-2:] != "aa" else "ba")])
        eq(s, 401, "right id, wrong secret")
        n = len(be.seen)
        s, _, body = curl(cd, "/api/x", ["X-API-Key: " + key, "X-Key-Id: spoofed"])
        eq(s, 200, "valid key")
        eq(len(be.seen), n + 1, "exactly the admitted request reached the backend")
        req = be.seen[-1]
        hd = {k.lower(): v for k, v in req.headers}
        eq(hd.get("x-key-id"), kid, "X-Key-Id upstream (the client's spoofed one dropped)")
        eq(hd.get("x-key-tier"), "free", "X-Key-Tier upstream")
        check("x-api-key" not in hd, "the key header is stripped before forwarding")
        check(key not in json.dumps(req.headers) + req.target, "secret reached the backend")
        secret = key.rsplit("_", 1)[1]
        check(secret not in json.dumps(req.headers), "secret part reached the backend")
        s, _, _ = curl(cd, "/open/x")
        eq(s, 200, "a route without auth stays open")
        lst = ctl_json(cd, "keys", "list")["keys"]
        eq([k["id"] for k in lst], [kid], "keys list")
        check("key" not in lst[0], "keys list never shows a secret")


@t.test("bearer and query credentials work and are stripped before forwarding")
def _():
    with State() as st, Backend() as be, Clawd(config(be, st)) as cd:
        kid, key = create(cd)
        s, h, _ = curl(cd, "/bearer/x")
        eq(s, 401, "bearer: none")
        check(h.get("www-authenticate", "").startswith("Bearer "), "Bearer challenge: %r" % h)
        s, _, _ = curl(cd, "/bearer/x", ["Authorization: Bearer " + key])
        eq(s, 200, "bearer: valid")
        hd = {k.lower(): v for k, v in be.seen[-1].headers}
        check("authorization" not in hd, "Authorization stripped")
        s, _, _ = curl(cd, "/query/x?a=1&api_key=%s&b=2" % key)
        eq(s, 200, "query: valid")
        eq(be.seen[-1].target, "/query/x?a=1&b=2", "api_key parameter cut out of the target")


@t.test("revoke → 401 on every worker within 1 s, without a reload")
def _():
    with State() as st, Backend() as be, Clawd(config(be, st)) as cd:
        kid, key = create(cd)
        for _ in range(4):
            eq(curl(cd, "/api/x", ["X-API-Key: " + key])[0], 200, "before revoke")
        t0 = time.monotonic()
        ctl(cd, "keys", "revoke", kid)
        ok = False
        while time.monotonic() - t0 < 1.0:
            # Several connections: SO_REUSEPORT spreads them over both workers.
            if all(curl(cd, "/api/x", ["X-API-Key: " + key])[0] == 401 for _ in range(4)):
                ok = True
                break
        check(ok, "revoked key still accepted 1 s later")
        eq(ctl_json(cd, "keys", "show", kid)["state"], "revoked", "state")
        ctl(cd, "keys", "revoke", kid, want_rc=1)


@t.test("rotate → old secret works during the grace period and fails after; new works")
def _():
    with State() as st, Backend() as be, Clawd(config(be, st)) as cd:
        kid, old = create(cd)
        r = ctl_json(cd, "keys", "rotate", kid, "--grace", "2s")
        new = r["key"]
        check(new != old and new.startswith("ocl_%s_" % kid), "same id, new secret")
        eq(curl(cd, "/api/x", ["X-API-Key: " + new])[0], 200, "new key")
        eq(curl(cd, "/api/x", ["X-API-Key: " + old])[0], 200, "old key within grace")
        time.sleep(2.6)
        eq(curl(cd, "/api/x", ["X-API-Key: " + old])[0], 401, "old key after grace")
        eq(curl(cd, "/api/x", ["X-API-Key: " + new])[0], 200, "new key after grace")
        r = ctl_json(cd, "keys", "rotate", kid, "--grace", "0s")
        eq(curl(cd, "/api/x", ["X-API-Key: " + new])[0], 401, "grace 0: the previous key ends now")
        eq(curl(cd, "/api/x", ["X-API-Key: " + r["key"]])[0], 200, "the newest key")


@t.test("scopes → 403 outside them; keys set changes them live")
def _():
    with State() as st, Backend() as be, Clawd(config(be, st)) as cd:
        kid, key = create(cd, "free", "scoped", "--scopes", "api")
        eq(curl(cd, "/api/x", ["X-API-Key: " + key])[0], 200, "in scope")
        s, h, _ = curl(cd, "/admin/x", ["X-API-Key: " + key])
        eq(s, 403, "out of scope")
        ctl(cd, "keys", "set", kid, "--scopes", "api,admin")
        eq(curl(cd, "/admin/x", ["X-API-Key: " + key])[0], 200, "after keys set --scopes")
        ctl(cd, "keys", "create", "--name", "x", "--tier", "free", "--scopes", "nosuch", want_rc=1)
        ctl(cd, "keys", "create", "--name", "x", "--tier", "gold", want_rc=1)


@t.test("expired key → 401")
def _():
    with State() as st, Backend() as be, Clawd(config(be, st)) as cd:
        # 3 s: room for the index swap (≤ 1 s) and a loaded machine before the first use.
        kid, key = create(cd, "free", "short", "--expires", "3s")
        t0 = time.monotonic()
        eq(curl(cd, "/api/x", ["X-API-Key: " + key])[0], 200, "before expiry")
        time.sleep(max(0.0, 3.6 - (time.monotonic() - t0)))
        eq(curl(cd, "/api/x", ["X-API-Key: " + key])[0], 401, "after expiry")
        eq(ctl_json(cd, "keys", "show", kid)["state"], "expired", "state")


@t.test("quota survives a restart; 429 with Retry-After when used up")
def _():
    with State() as st, Backend() as be:
        cfg = config(be, st)
        with Clawd(cfg) as cd:
            kid, key = create(cd, "tiny")
            for i in range(3):
                eq(curl(cd, "/api/x", ["X-API-Key: " + key])[0], 200, "request %d" % i)
        with Clawd(cfg) as cd:
            eq(ctl_json(cd, "limits", "show", "--key", kid)["used_today"], 3, "used_today restored")
            for i in range(2):
                eq(curl(cd, "/api/x", ["X-API-Key: " + key])[0], 200, "request %d after restart" % i)
            s, h, _ = curl(cd, "/api/x", ["X-API-Key: " + key])
            eq(s, 429, "sixth request of a quota of 5")
            check(int(h.get("retry-after", "0")) > 0, "Retry-After on a quota 429: %r" % h)


@t.test("the secret never appears in the access log, the audit log, stderr or upstream")
def _():
    with State() as st, Backend() as be:
        cd = Clawd(config(be, st))
        with cd:
            kid, key = create(cd)
            r = ctl_json(cd, "keys", "rotate", kid, "--grace", "1h")
            keys = [key, r["key"]]
            for k in keys:
                curl(cd, "/api/x", ["X-API-Key: " + k])
                curl(cd, "/bearer/x", ["Authorization: Bearer " + k])
                curl(cd, "/query/x?api_key=" + k)
            curl(cd, "/api/x", ["X-API-Key: " + key + "x"])  # malformed: must not be logged either
            ctl(cd, "keys", "revoke", kid)
            time.sleep(0.3)
            texts = {"access log": open(cd.access_log).read(), "stderr": cd.stderr(),
                     "upstream": json.dumps([(q.target, q.headers) for q in be.seen])}
            audit = open(os.path.join(st, "audit.log")).read()
            texts["audit log"] = audit
        texts["stderr"] = cd.stderr() if os.path.exists(cd.stderr_path) else texts["stderr"]
        for k in keys:
            secret = k.rsplit("_", 1)[1]
            for where, text in texts.items():
                check(secret not in text, "secret found in the %s" % where)
        acts = [json.loads(ln)["action"] for ln in audit.splitlines()]
        eq(acts, ["keys.create", "keys.rotate", "keys.revoke"], "audit actions")
        for ln in audit.splitlines():
            e = json.loads(ln)
            eq(e["uid"], os.getuid(), "audit uid from SO_PEERCRED")
            eq(e["key"], kid, "audit key id")
            check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]), "audit time")


@t.test("a key store with mode 0644 (or a foreign owner) is refused at start")
def _():
    with State() as st, Backend() as be:
        path = os.path.join(st, "keys.db")
        with open(path, "w"):
            pass
        os.chmod(path, 0o644)
        cfgfile = os.path.join(st, "c.yaml")
        with open(cfgfile, "w") as f:
            f.write(harness.to_yaml(config(be, st)) + "\n")
        rc, out, err = run_clawd(["-c", cfgfile])
        check(rc != 0, "clawd started with a 0644 key store")
        check("keys.db: mode 0644 is too open" in err, "clear error: %r" % err)
        os.chmod(path, 0o600)
        os.chown(path, 65534, -1)
        rc, out, err = run_clawd(["-c", cfgfile])
        check(rc != 0 and "owned by uid 65534" in err, "foreign owner refused: %r" % err)


@t.test("clawctl keys/limits: bad arguments exit 2 with one line, without contacting clawd")
def _():
    d = make_tmpdir("clawctl-keys-")
    try:
        sock = os.path.join(d, "nobody.sock")
        for args in (["keys"], ["keys", "create", "--tier", "free"], ["keys", "create", "--name", "a"],
                     ["keys", "create", "--name", "a", "--tier", "t", "--expires", "soon"],
                     ["keys", "show"], ["keys", "show", "NOT-AN-ID"], ["keys", "revoke", "abc"],
                     ["keys", "rotate", "aaaaaaaaaaaa", "--grace", "x"],
                     ["keys", "set", "aaaaaaaaaaaa"], ["keys", "set", "aaaaaaaaaaaa", "--rate", "5"],
                     ["keys", "frob"], ["limits"], ["limits", "show", "--ip", "nope"],
                     ["limits", "show", "--key", "x"]):
            p = subprocess.run([CLAWCTL, "-s", sock] + args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=10)
            eq(p.returncode, 2, "exit status of clawctl %s" % " ".join(args))
            lines = p.stderr.decode().strip().splitlines()
            check(len(lines) == 1 and lines[0].startswith("clawctl: "),
                  "clawctl %s: want one 'clawctl: ...' line, got %r" % (" ".join(args), lines))
    finally:
        remove_tmpdir(d)


t.main()
