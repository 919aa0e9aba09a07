#!/bin/bash
# bench/auth.sh — req/s of one clawd route with `auth: api_key` + a per-key limit that never triggers, vs the same route without, in one run.
#
# One nginx backend, one clawd with two routes that differ only in auth and
# limits (/open/ and /auth/), wrk against each in turn (open, auth, open,
# auth, ...). Prints the median req/s of each and the overhead. Everything
# started here is killed on exit. Only 127.0.0.1 is used.
set -euo pipefail

BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
ROOT=$PWD
CLAWD=${CLAWD:-$ROOT/$BUILD/clawd}
CLAWCTL=${CLAWCTL:-$ROOT/$BUILD/clawctl}
WORKERS=${BENCH_WORKERS:-1}
THREADS=${BENCH_THREADS:-1}
CONNS=${BENCH_CONNS:-32}
DURATION=${BENCH_DURATION:-5}
REPEATS=${BENCH_REPEATS:-5}
PORT_BASE=${BENCH_PORT:-18580}
BE_PORT=$PORT_BASE
PX_PORT=$((PORT_BASE + 1))

die() { echo "bench/auth: $*" >&2; exit 1; }
for n in "$WORKERS" "$THREADS" "$CONNS" "$DURATION" "$REPEATS" "$PORT_BASE"; do
	[[ $n =~ ^[0-9]+$ ]] || die "numeric setting expected, got '$n'"
done
for tool in wrk nginx curl; do command -v "$tool" >/dev/null || die "$tool not found (make deps)"; done
[ -x "$CLAWD" ] && [ -x "$CLAWCTL" ] || die "$CLAWD or $CLAWCTL missing: build first"

TMP=$(mktemp -d /tmp/openclaw-bench-auth.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ $rc = 0 ] && rm -rf "$TMP" || echo "bench/auth: logs kept in $TMP" >&2
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

head -c 128 /dev/zero | tr '\0' 'x' >"$TMP/small"
cat >"$TMP/nginx.conf" <<NGX
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err;
events { worker_connections 4096; }
http {
	access_log off;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:$BE_PORT;
		location / { root $TMP; try_files /small =404; }
	}
}
NGX
nginx -c "$TMP/nginx.conf" -p "$TMP" >"$TMP/nginx.log" 2>&1 &
PIDS+=($!)

mkdir -m 0750 "$TMP/state"
cat >"$TMP/clawd.yaml" <<YML
workers: $WORKERS
state_dir: $TMP/state
control: {socket: $TMP/ctl.sock}
access_log: off
tiers: [{name: bench, rate: 1000000000/s, burst: 1000000}]
listeners: [{name: web, address: "127.0.0.1:$PX_PORT"}]
upstreams: [{name: be, servers: ["127.0.0.1:$BE_PORT"], keepalive: 256}]
routes:
  - {name: open, match: {path_prefix: /open/}, upstream: be}
  - name: auth
    match: {path_prefix: /auth/}
    upstream: be
    auth: {type: api_key, header: X-API-Key, upstream_headers: {key_id: X-Key-Id, tier: X-Key-Tier}}
    limits: [{key: api_key, rate: 1000000000/s, burst: 1000000}]
YML
"$CLAWD" -c "$TMP/clawd.yaml" >"$TMP/clawd.log" 2>&1 &
PIDS+=($!)

for i in $(seq 100); do
	curl -s -o /dev/null -m 1 "http://127.0.0.1:$PX_PORT/open/x" && break
	sleep 0.05
done
KEY=$("$CLAWCTL" -s "$TMP/ctl.sock" --json keys create --name bench --tier bench |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" "http://127.0.0.1:$PX_PORT/auth/x")" = 200 ] ||
	die "the auth route does not answer 200"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PX_PORT/auth/x")" = 401 ] ||
	die "the auth route answers without a key"

run() { # path [header]
	local args=(-t"$THREADS" -c"$CONNS" -d"${DURATION}s")
	[ $# -gt 1 ] && args+=(-H "$2")
	wrk "${args[@]}" "http://127.0.0.1:$PX_PORT$1" | awk '/^Requests\/sec:/ { print $2 }'
}

run /open/x >/dev/null # warm-up (pooled backend connections, caches)
OPEN=() AUTH=()
for r in $(seq "$REPEATS"); do
	OPEN+=("$(run /open/x)")
	AUTH+=("$(run /auth/x "X-API-Key: $KEY")")
	echo "round $r: open ${OPEN[-1]} req/s, auth+limit ${AUTH[-1]} req/s"
done
python3 - "${#OPEN[@]}" "${OPEN[@]}" "${AUTH[@]}" <<'PY'
import statistics, sys
n = int(sys.argv[1]); o = [float(x) for x in sys.argv[2:2 + n]]; a = [float(x) for x in sys.argv[2 + n:]]
mo, ma = statistics.median(o), statistics.median(a)
print("median: open %.0f req/s, auth+limit %.0f req/s, overhead %.2f%% (target <= 5%%)"
      % (mo, ma, 100.0 * (mo - ma) / mo))
PY
