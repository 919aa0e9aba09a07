#!/bin/bash
# bench/splice.sh — sockmap splice against the userspace relay, nginx stream and HAProxy tcp mode: throughput, p99, CPU per GB (docs/splice.md).
#
# Contenders, all in front of one nginx backend on loopback, driven by wrk
# over keep-alive connections:
#   splice  clawd, route mode: splice (first request in L7, the rest in the kernel)
#   tcp     clawd, route mode: tcp (pure L4, spliced from the first byte)
#   relay   clawd, route mode: tcp with splice.enabled: off (userspace byte relay)
#   http    clawd, plain HTTP proxying (reference)
#   nginx   nginx stream proxy_pass (needs libnginx-mod-stream)
#   haproxy HAProxy mode tcp
# Workloads: big (1 MiB bodies), small (128 B bodies).
# Per run: requests/s, MB/s, p99, the proxy's CPU seconds per GB (utime+stime
# of its processes) and the machine's busy CPU seconds per GB from /proc/stat
# (user+nice+system+irq+softirq+steal: kworkers and softirq included; wrk and
# the backend too, the same for every contender). Root is needed for the
# kernel contenders (bpffs). Also per run: context switches per request,
# machine-wide and of kworker threads (the redirect path's backlog work runs
# there), and, when sysctl kernel.bpf_stats_enabled=1, the verdict program's
# ns per run, and the proxy's own wake-ups per second. Knobs: BENCH_DURATION (s, default 5), BENCH_CONNS (32),
# BENCH_CONTENDERS, BENCH_WORKLOADS, BENCH_PORT (18580), BENCH_SNDBUF
# (splice.sndbuf, default 4m), BENCH_OUT, BENCH_REPEAT (1: rounds of all
# contenders, interleaved, to tell a gap from noise), BENCH_PERF (a
# directory: `perf record -a -g` of each run goes there as W-C-R.data),
# CLAWD_BASE (a second clawd binary: contenders named KIND@base, e.g.
# splice@base, run it, for a before/after in one run).
set -euo pipefail

BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
ROOT=$PWD
CLAWD=${CLAWD:-$ROOT/$BUILD/clawd}
DURATION=${BENCH_DURATION:-5}
CONNS=${BENCH_CONNS:-32}
CONTENDERS=${BENCH_CONTENDERS:-splice tcp relay http nginx haproxy}
WORKLOADS=${BENCH_WORKLOADS:-big small}
PORT_BASE=${BENCH_PORT:-18580}
SNDBUF=${BENCH_SNDBUF:-4m}
OUTDIR=${BENCH_OUT:-$ROOT/bench/results}
REPEAT=${BENCH_REPEAT:-1}
PERFDIR=${BENCH_PERF:-}

die() { echo "bench/splice: $*" >&2; exit 1; }
[[ $DURATION =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ && $PORT_BASE =~ ^[0-9]+$ && $REPEAT =~ ^[1-9][0-9]*$ ]] ||
	die "numeric settings expected"
[ -z "$PERFDIR" ] || command -v perf >/dev/null || die "perf not found (BENCH_PERF)"

for tool in wrk nginx haproxy curl; do command -v $tool >/dev/null || die "$tool not found (make deps)"; done
[ -x "$CLAWD" ] || die "$CLAWD not found: make BUILD=$BUILD all"
[ "$(id -u)" = 0 ] || die "needs root (the splice program and bpffs)"
NGX_STREAM=/usr/lib/nginx/modules/ngx_stream_module.so

declare -A PORT=([backend]=$PORT_BASE)
n=1
for c in $CONTENDERS; do PORT[$c]=$((PORT_BASE + n)); n=$((n + 1)); done
declare -A PID=()
STARTED=()
TMP=$(mktemp -d /tmp/openclaw-bench-splice.XXXXXX)
chmod 755 "$TMP"
PINS=/sys/fs/bpf/openclaw-bench-splice-$$

descendants() { local f c; for f in /proc/"$1"/task/*/children; do
	[ -r "$f" ] || continue; for c in $(cat "$f" 2>/dev/null); do echo "$c"; descendants "$c"; done; done; }

cleanup() {
	local rc=$? pids=() p
	trap - EXIT INT TERM
	for p in "${STARTED[@]}"; do pids+=($(descendants "$p") "$p"); done
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	sleep 0.5
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$PINS"
	if [ $rc != 0 ] || [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench/splice: logs kept in $TMP" >&2; else rm -rf "$TMP"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

spawn() { local name=$1; shift; "$@" >"$TMP/$name.log" 2>&1 & PID[$name]=$!; STARTED+=($!); }

wait_ready() { local name=$1 i out=""
	for i in $(seq 100); do
		kill -0 "${PID[$name]}" 2>/dev/null || { tail -n 20 "$TMP/$name.log" >&2; die "$name exited at start-up"; }
		out=$(curl -s -o /dev/null -m 1 -w '%{http_code} %{size_download}' "http://127.0.0.1:${PORT[$name]}/small" || true)
		[ "$out" = "200 128" ] && return 0
		sleep 0.1
	done
	die "$name not ready on ${PORT[$name]} (last: '$out')"
}

cpu_ticks() { local t=0 p s; for p in "$1" $(descendants "$1"); do
	s=$(cat /proc/"$p"/stat 2>/dev/null) || continue; s=${s##*) }; read -r -a f <<<"$s"
	t=$((t + f[11] + f[12])); done; echo $t; }
machine_ticks() { local c u n s i io irq si st r; read -r c u n s i io irq si st r </proc/stat; echo $((u + n + s + irq + si + st)); }
HZ=$(getconf CLK_TCK)
ctxt() { awk '$1 == "ctxt" { print $2 }' /proc/stat; }
# Context switches of the proxy's threads (pid $1 and its descendants) so far: its wake-ups.
proxy_cs() { local p; for p in "$1" $(descendants "$1"); do cat /proc/"$p"/task/*/status 2>/dev/null; done |
	awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }
# Context switches of kworker threads so far (voluntary + not): each is one run of queued work ending.
kworker_cs() { local d comm n=0 v
	for d in /proc/[0-9]*; do
		read -r comm 2>/dev/null <"$d/comm" || continue
		[[ $comm == kworker* ]] || continue
		v=$(awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' "$d/status" 2>/dev/null) || continue
		n=$((n + v))
	done; echo $n; }
# "run_time_ns run_cnt" summed over every splice_verdict program (0 0 without bpf_stats): only the
# contender being measured runs its program, so the difference over a run is that contender's.
verdict_stats() { bpftool -j prog show 2>/dev/null | python3 -c '
import json, sys
t = c = 0
try:
    progs = json.load(sys.stdin)
except ValueError:
    progs = []
for p in progs:
    if p.get("name") == "splice_verdict":
        t += p.get("run_time_ns", 0); c += p.get("run_cnt", 0)
print(t, c)'; }

for p in "${PORT[@]}"; do ! ss -Htln "sport = :$p" | grep -q . || die "127.0.0.1:$p in use (BENCH_PORT)"; done

# ---- backend ------------------------------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/backend" "$TMP/nginx"
head -c 128 /dev/zero | tr '\0' a >"$TMP/www/small"
head -c $((1 << 20)) /dev/zero | tr '\0' b >"$TMP/www/big"
cat >"$TMP/backend/nginx.conf" <<CONF
daemon off; pid $TMP/backend/nginx.pid; error_log $TMP/backend/error.log warn;
worker_processes 1;
events { worker_connections 8192; }
http {
	access_log off; sendfile on; tcp_nopush on;
	client_body_temp_path $TMP/backend/b; proxy_temp_path $TMP/backend/p;
	fastcgi_temp_path $TMP/backend/f; uwsgi_temp_path $TMP/backend/u; scgi_temp_path $TMP/backend/s;
	keepalive_requests 10000000; keepalive_timeout 300s;
	default_type application/octet-stream;
	server { listen 127.0.0.1:${PORT[backend]} reuseport backlog=4096; root $TMP/www; }
}
CONF
spawn backend nginx -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend/nginx.conf"
wait_ready backend

# ---- contenders -----------------------------------------------------------------------------
clawd_cfg() { # name mode enabled
	local pins=${1//@/-}
	cat <<CONF
workers: 1
access_log: off
drain_timeout: 1s
control:
  socket: $TMP/$1.sock
splice:
  enabled: $3
  sndbuf: $SNDBUF
  pin_dir: $PINS/$pins
listeners:
  - name: web
    address: 127.0.0.1:${PORT[$1]}
    backlog: 4096
upstreams:
  - name: backend
    keepalive: 256
    servers:
      - 127.0.0.1:${PORT[backend]}
routes:
  - name: default
    upstream: backend
    listeners: [web]
    mode: $2
CONF
}
for c in $CONTENDERS; do
	case $c in
	*@base) [ -x "${CLAWD_BASE:-}" ] || die "$c needs CLAWD_BASE (a clawd binary)" ;;
	esac
	case ${c%@base} in
	splice) clawd_cfg "$c" splice auto >"$TMP/$c.yaml" ;;
	tcp) clawd_cfg "$c" tcp auto >"$TMP/$c.yaml" ;;
	relay) clawd_cfg "$c" tcp off >"$TMP/$c.yaml" ;;
	http) clawd_cfg "$c" http off >"$TMP/$c.yaml" ;;
	nginx)
		[ -r $NGX_STREAM ] || die "nginx stream module missing ($NGX_STREAM): apt-get install libnginx-mod-stream"
		cat >"$TMP/nginx/nginx.conf" <<CONF
load_module $NGX_STREAM;
daemon off; pid $TMP/nginx/nginx.pid; error_log $TMP/nginx/error.log warn;
worker_processes 1;
events { worker_connections 8192; }
stream { server { listen 127.0.0.1:${PORT[nginx]} backlog=4096; proxy_pass 127.0.0.1:${PORT[backend]}; } }
CONF
		;;
	haproxy)
		cat >"$TMP/haproxy.cfg" <<CONF
global
	nbthread 1
	maxconn 8192
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
listen l4
	bind 127.0.0.1:${PORT[haproxy]}
	server s1 127.0.0.1:${PORT[backend]}
CONF
		;;
	*) die "unknown contender '$c'" ;;
	esac
done
for c in $CONTENDERS; do
	case $c in
	*@base) spawn "$c" "$CLAWD_BASE" -c "$TMP/$c.yaml" --log-level warn ;;
	splice | tcp | relay | http) spawn $c "$CLAWD" -c "$TMP/$c.yaml" --log-level warn ;;
	nginx) spawn nginx nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" ;;
	haproxy) spawn haproxy haproxy -db -f "$TMP/haproxy.cfg" ;;
	esac
	wait_ready $c
done

# ---- runs -----------------------------------------------------------------------------------
mkdir -p "$OUTDIR"
OUT=$OUTDIR/splice-$(date -u +%Y%m%dT%H%M%SZ).md
{
	echo "# bench/splice.sh — $(date -u +%FT%TZ), $(nproc) CPUs, kernel $(uname -r)"
	echo
	echo "wrk -t1 -c$CONNS -d${DURATION}s keep-alive; splice.sndbuf $SNDBUF; CPU s/GB = CPU seconds per GB of response bytes."
	echo "cs/req: the machine's context switches per request (/proc/stat ctxt); kworker cs/req: those of kworker threads;"
	echo "verdict ns/run: the verdict program's run_time_ns / run_cnt (sysctl kernel.bpf_stats_enabled=1, else -);"
	echo "proxy wake-ups/s: the proxy's own context switches per second.${CLAWD_BASE:+ KIND@base: $CLAWD_BASE.}"
	echo
	[ "$REPEAT" = 1 ] || echo "$REPEAT rounds, contenders interleaved within each round."
	[ "$REPEAT" = 1 ] || echo
	echo "| workload | contender | req/s | MB/s | p99 ms | proxy CPU s/GB | system CPU s/GB | cs/req | kworker cs/req | verdict ns/run | proxy wake-ups/s |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$OUT"
[ -z "$PERFDIR" ] || mkdir -p "$PERFDIR"
for w in $WORKLOADS; do
	for r in $(seq "$REPEAT"); do
		for c in $CONTENDERS; do
			# A short warm-up: pooled connections, splice hand-offs, page cache.
			wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${PORT[$c]}/$w" >/dev/null 2>&1 || true
			perf_pid=
			if [ -n "$PERFDIR" ]; then
				perf record -q -a -g -o "$PERFDIR/$w-$c-$r.data" -- sleep $((DURATION > 2 ? DURATION - 1 : 1)) \
					>/dev/null 2>&1 & perf_pid=$!
			fi
			read -r v0 n0 < <(verdict_stats)
			k0=$(kworker_cs); x0=$(ctxt); w0=$(proxy_cs "${PID[$c]}")
			p0=$(cpu_ticks "${PID[$c]}"); m0=$(machine_ticks)
			line=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$ROOT/bench/wrk_report.lua" \
				"http://127.0.0.1:${PORT[$c]}/$w" 2>&1 | grep '^BENCHJSON' | cut -d' ' -f2- || true)
			p1=$(cpu_ticks "${PID[$c]}"); m1=$(machine_ticks)
			w1=$(proxy_cs "${PID[$c]}"); x1=$(ctxt); k1=$(kworker_cs)
			read -r v1 n1 < <(verdict_stats)
			[ -z "$perf_pid" ] || wait "$perf_pid" || true
			[ -n "$line" ] || { echo "bench/splice: $c/$w: wrk produced no result" >&2; continue; }
			python3 - "$w" "$c" "$line" $((p1 - p0)) $((m1 - m0)) "$HZ" $((x1 - x0)) $((k1 - k0)) \
				$((v1 - v0)) $((n1 - n0)) $((w1 - w0)) <<'PY' | tee -a "$OUT"
import json, sys
w, c, line, pt, mt, hz = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
cs, kcs, vns, vcnt, pcs = (int(x) for x in sys.argv[7:12])
secs = line["duration_us"] / 1e6
gb = line["bytes"] / 1e9
req = line["requests"]
errs = ", ".join("%s %d" % (k[4:], line[k]) for k in sorted(line) if k.startswith("err_") and line[k])
print("| %s | %s | %.0f | %.1f | %.2f | %.3f | %.2f | %.2f | %.2f | %s | %.0f |%s" % (
    w, c, req / secs, line["bytes"] / secs / 1e6, line["lat_p99_us"] / 1000,
    pt / hz / gb if gb else 0, mt / hz / gb if gb else 0, cs / req if req else 0,
    kcs / req if req else 0, "%.0f" % (vns / vcnt) if vcnt else "-", pcs / secs,
    " errors: " + errs if errs else ""))
PY
		done
	done
done
for c in $CONTENDERS; do
	[[ ${c%@base} == splice || ${c%@base} == tcp ]] && [ -S "$TMP/$c.sock" ] || continue
	echo >>"$OUT"
	echo "$c: splice.stats $(python3 -c "
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'{\"cmd\":\"splice.stats\"}\n')
b = b''
while not b.endswith(b'\n'):
    d = s.recv(65536)
    if not d: break
    b += d
r = json.loads(b); print('spliced=%s fallbacks=%s relayed_bytes=%s kernel=%s' % (r.get('spliced'), r.get('fallbacks'), r.get('relayed_bytes'), r.get('kernel')))
" "$TMP/$c.sock")" >>"$OUT"
done
echo
echo "bench/splice: results in $OUT"
