#!/bin/bash
# bench/run.sh — `make bench`: clawd, nginx and HAProxy side by side in front of one nginx backend, with wrk, on loopback.
#
# Every knob is an environment variable (see bench/README.md); the defaults are
# the documented full run. Everything this script starts is recorded by PID and
# killed on exit, on error and on Ctrl-C. Only 127.0.0.1 is used.
set -euo pipefail

BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
ROOT=$PWD
CLAWD=${CLAWD:-$ROOT/$BUILD/clawd}
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

WORKERS=${BENCH_WORKERS:-1}
THREADS=${BENCH_THREADS:-1}
CONNS=${BENCH_CONNS:-32}
DURATION=${BENCH_DURATION:-5}
REPEATS=${BENCH_REPEATS:-3}
WARMUP=${BENCH_WARMUP:-1}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	DURATION=${BENCH_DURATION:-2}
	REPEATS=${BENCH_REPEATS:-1}
fi
# Off by default: pinned, wrk and the backend saturate their CPU while the
# proxy idles on the other, so req/s measures the load side, and pinned
# processes cannot move away from other load on the machine (bench/README.md).
PIN=${BENCH_PIN:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-0}   # wrk and the backend
PROXY_CPU=${BENCH_PROXY_CPU:-1} # the proxy under test
PROXIES=${BENCH_PROXIES:-clawd haproxy nginx}
WORKLOADS=${BENCH_WORKLOADS:-small big close}
PORT_BASE=${BENCH_PORT:-18480}
OUTDIR=${BENCH_OUT:-$ROOT/bench/results}

BACKEND_PORT=$PORT_BASE
declare -A PORT=([clawd]=$((PORT_BASE + 1)) [haproxy]=$((PORT_BASE + 2)) [nginx]=$((PORT_BASE + 3)))
declare -A PID=()
declare -A DEAD=()
STARTED=()

die() { echo "bench: $*" >&2; exit 1; }

for n in "$DURATION" "$REPEATS" "$WORKERS" "$THREADS" "$CONNS" "$WARMUP" "$PORT_BASE"; do
	[[ $n =~ ^[0-9]+$ ]] || die "numeric setting expected, got '$n' (durations are whole seconds)"
done
[ "$REPEATS" -ge 1 ] && [ "$DURATION" -ge 1 ] || die "BENCH_REPEATS and BENCH_DURATION must be >= 1"
for p in $PROXIES; do [ -n "${PORT[$p]:-}" ] || die "unknown proxy '$p' (clawd, haproxy, nginx)"; done
for w in $WORKLOADS; do case $w in small|big|close) ;; *) die "unknown workload '$w' (small, big, close)";; esac; done
for tool in wrk nginx haproxy curl taskset; do
	command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done
if [[ " $PROXIES " == *" clawd "* ]]; then
	[ -x "$CLAWD" ] || die "$CLAWD not found: run make BUILD=$BUILD all first"
fi

TMP=$(mktemp -d /tmp/openclaw-bench.XXXXXX)
chmod 755 "$TMP" # nginx workers run as an unprivileged user and must read the bodies
RAW=$TMP/raw.jsonl
: >"$RAW"

# Children first (nginx workers), then the recorded PIDs, TERM then KILL.
cleanup() {
	local rc=$? pids=() p i
	trap - EXIT INT TERM
	for p in "${STARTED[@]}"; do
		pids+=($(proc_tree "$p") "$p")
	done
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for i in $(seq 30); do
		local alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
		echo "bench: configs and logs kept in $TMP" >&2
	else
		rm -rf "$TMP"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# All descendants of $1 (nginx master → workers), from /proc.
proc_tree() {
	local p=$1 c f
	for f in /proc/"$p"/task/*/children; do
		[ -r "$f" ] || continue
		for c in $(cat "$f" 2>/dev/null); do
			echo "$c"
			proc_tree "$c"
		done
	done
}

# utime+stime, in clock ticks, of $1 and all its descendants. For a
# multi-threaded process /proc/PID/stat already sums every thread.
cpu_ticks() {
	local total=0 p s
	for p in "$1" $(proc_tree "$1"); do
		s=$(cat /proc/"$p"/stat 2>/dev/null) || continue
		s=${s##*) }
		read -r -a f <<<"$s"
		total=$((total + f[11] + f[12]))
	done
	echo $total
}

# Command prefixes that pin to a CPU (empty when pinning is off). Arrays, not
# functions, so that $! is the PID of the process itself.
LOAD_PIN=() PROXY_PIN=()
if [ "$PIN" = 1 ]; then LOAD_PIN=(taskset -c "$LOAD_CPU"); PROXY_PIN=(taskset -c "$PROXY_CPU"); fi

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# Start a long-lived process in the background and remember its PID.
spawn() { # name logfile command...
	local name=$1 log=$2; shift 2
	"$@" >"$log" 2>&1 &
	PID[$name]=$!
	STARTED+=($!)
}

# Wait until http://127.0.0.1:PORT/small answers 200 with the 128-byte body.
wait_ready() { # name port
	local name=$1 port=$2 i out
	for i in $(seq 100); do
		if ! kill -0 "${PID[$name]}" 2>/dev/null; then
			echo "bench: $name exited during start-up; its log:" >&2
			tail -n 20 "$TMP/$name.log" >&2
			return 1
		fi
		out=$(curl -s -o /dev/null -m 1 -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/small" || true)
		[ "$out" = "200 128" ] && return 0
		sleep 0.1
	done
	echo "bench: $name on 127.0.0.1:$port not ready after 10 s (last answer: '$out')" >&2
	return 1
}

# ---- backend: a separate nginx serving fixed bodies -----------------------------------
mkdir -p "$TMP/www" "$TMP/backend" "$TMP/nginx"
head -c 128 /dev/zero | tr '\0' 'a' >"$TMP/www/small"
head -c $((1 << 20)) /dev/zero | tr '\0' 'b' >"$TMP/www/big"

nginx_common() { # prefix dir
	cat <<EOF
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; multi_accept on; }
EOF
}

{
	nginx_common "$TMP/backend"
	cat <<EOF
worker_processes 1;
http {
	access_log off;
	client_body_temp_path $TMP/backend/body;
	proxy_temp_path $TMP/backend/proxy;
	fastcgi_temp_path $TMP/backend/fastcgi;
	uwsgi_temp_path $TMP/backend/uwsgi;
	scgi_temp_path $TMP/backend/scgi;
	sendfile on;
	tcp_nopush on;
	open_file_cache max=16 inactive=1h;
	open_file_cache_valid 1h;
	keepalive_requests 10000000;
	keepalive_timeout 300s;
	default_type application/octet-stream;
	server {
		listen 127.0.0.1:$BACKEND_PORT reuseport backlog=4096;
		root $TMP/www;
	}
}
EOF
} >"$TMP/backend/nginx.conf"

# ---- contenders ---------------------------------------------------------------------
# Same work for each: forward to the backend over pooled keep-alive
# connections, add X-Forwarded-For / X-Forwarded-Proto (clawd always does),
# pass the client's Host, no access log, $WORKERS worker(s).
cat >"$TMP/clawd.yaml" <<EOF
workers: $WORKERS
access_log: off
drain_timeout: 1s
control:
  socket: $TMP/clawd.sock
listeners:
  - name: web
    address: 127.0.0.1:${PORT[clawd]}
    backlog: 4096
upstreams:
  - name: backend
    keepalive: 256
    servers:
      - 127.0.0.1:$BACKEND_PORT
routes:
  - name: default
    upstream: backend
EOF

cat >"$TMP/haproxy.cfg" <<EOF
global
	nbthread $WORKERS
	maxconn 8192
defaults
	mode http
	option forwardfor
	http-reuse always
	timeout connect 5s
	timeout client 60s
	timeout server 60s
	timeout http-keep-alive 60s
frontend web
	bind 127.0.0.1:${PORT[haproxy]}
	http-request set-header X-Forwarded-Proto http
	default_backend backend
backend backend
	server s1 127.0.0.1:$BACKEND_PORT
EOF

{
	nginx_common "$TMP/nginx"
	cat <<EOF
worker_processes $WORKERS;
http {
	access_log off;
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	keepalive_requests 10000000;
	keepalive_timeout 60s;
	upstream backend {
		server 127.0.0.1:$BACKEND_PORT;
		keepalive 256;
		keepalive_requests 10000000;
	}
	server {
		listen 127.0.0.1:${PORT[nginx]} backlog=4096;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$http_host;
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto \$scheme;
			# Stream large bodies through memory buffers, never via temp files on disk.
			proxy_max_temp_file_size 0;
		}
	}
}
EOF
} >"$TMP/nginx/nginx.conf"

for p in $BACKEND_PORT ${PORT[clawd]} ${PORT[haproxy]} ${PORT[nginx]}; do
	port_free "$p" || die "127.0.0.1:$p is in use; choose another base with BENCH_PORT"
done

nginx -t -q -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend/nginx.conf"
spawn backend "$TMP/backend.log" "${LOAD_PIN[@]}" nginx -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend/nginx.conf"
wait_ready backend "$BACKEND_PORT"

for p in $PROXIES; do
	case $p in
	clawd)
		"$CLAWD" --check -c "$TMP/clawd.yaml" >/dev/null
		spawn clawd "$TMP/clawd.log" "${PROXY_PIN[@]}" "$CLAWD" -c "$TMP/clawd.yaml" --log-level warn
		;;
	haproxy)
		haproxy -c -q -f "$TMP/haproxy.cfg"
		spawn haproxy "$TMP/haproxy.log" "${PROXY_PIN[@]}" haproxy -db -f "$TMP/haproxy.cfg"
		;;
	nginx)
		nginx -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
		spawn nginx "$TMP/nginx.log" "${PROXY_PIN[@]}" nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
		;;
	esac
	wait_ready "$p" "${PORT[$p]}"
done

# ---- runs ---------------------------------------------------------------------------
WRK_TIMEOUT=$((DURATION + 30))

run_wrk() { # proxy workload seconds → prints the BENCHJSON line (or nothing)
	local p=$1 w=$2 secs=$3 url hdr=()
	case $w in
	small) url=/small ;;
	big) url=/big ;;
	close) url=/small; hdr=(-H 'Connection: close') ;;
	esac
	timeout -k 5 "$WRK_TIMEOUT" "${LOAD_PIN[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" "${hdr[@]}" \
		-s "$ROOT/bench/wrk_report.lua" "http://127.0.0.1:${PORT[$p]}$url" 2>&1 || true
	# This runs in a command substitution, so its children's times (the
	# second line of `times`, which must not run in a subshell of its own) are wrk's.
	times
}

# Machine-wide busy time (user nice system irq softirq steal), in clock ticks.
machine_ticks() {
	local cpu u n s idle io irq sirq steal rest
	read -r cpu u n s idle io irq sirq steal rest </proc/stat
	echo $((u + n + s + irq + sirq + steal))
}

# "1m2.340s" → clock ticks.
to_ticks() {
	local m=${1%%m*} sec=${1#*m}
	sec=${sec%s}
	awk -v m="$m" -v s="$sec" -v hz="$CLK_TCK" 'BEGIN { printf "%d", (m * 60 + s) * hz + 0.5 }'
}
CLK_TCK=$(getconf CLK_TCK)

# A proxy found dead is reported once, with its log, and skipped from then on.
check_alive() { # proxy when
	local p=$1 st=""
	[ -n "${DEAD[$p]:-}" ] && return 1
	kill -0 "${PID[$p]}" 2>/dev/null && return 0
	wait "${PID[$p]}" 2>/dev/null || st=$?
	DEAD[$p]="process exited ${2}${st:+ (status $st)}: $(tail -n 1 "$TMP/$p.log" | tr -d '"\\[:cntrl:]' | cut -c1-120)"
	echo "bench: $p exited $2${st:+ (status $st)}; last lines of its log:" >&2
	tail -n 20 "$TMP/$p.log" >&2
	return 1
}

measure() { # proxy workload repeat
	local p=$1 w=$2 r=$3 before after out line ticks m0 m1 b0 b1 wt wu ws
	if ! check_alive "$p" "before $w run $r"; then
		printf '{"proxy":"%s","workload":"%s","repeat":%d,"failed":"%s"}\n' "$p" "$w" "$r" "${DEAD[$p]}" >>"$RAW"
		return
	fi
	m0=$(machine_ticks); b0=$(cpu_ticks "${PID[backend]}")
	before=$(cpu_ticks "${PID[$p]}")
	out=$(run_wrk "$p" "$w" "$DURATION")
	after=$(cpu_ticks "${PID[$p]}")
	m1=$(machine_ticks); b1=$(cpu_ticks "${PID[backend]}")
	wt=$(grep -E '^[0-9]+m[0-9.]+s [0-9]+m[0-9.]+s$' <<<"$out" | tail -n1) || true
	read -r wu ws <<<"$wt"
	wt=$(( $(to_ticks "${wu:-0m0s}") + $(to_ticks "${ws:-0m0s}") ))
	line=$(grep '^BENCHJSON ' <<<"$out" | head -n1 | cut -d' ' -f2- || true)
	if ! check_alive "$p" "during $w run $r"; then
		printf '{"proxy":"%s","workload":"%s","repeat":%d,"failed":"%s"}\n' "$p" "$w" "$r" "${DEAD[$p]}" >>"$RAW"
		return
	fi
	if [ -z "$line" ]; then
		echo "bench: $p $w run $r: wrk gave no summary (stall?); wrk said:" >&2
		grep -Ev '^[0-9]+m[0-9.]+s [0-9]+m[0-9.]+s$' <<<"$out" | tail -n 10 >&2
		printf '{"proxy":"%s","workload":"%s","repeat":%d,"failed":"no wrk summary within %d s"}\n' \
			"$p" "$w" "$r" "$WRK_TIMEOUT" >>"$RAW"
		return
	fi
	ticks=$((after - before))
	# Busy time of everything else on the machine during the run: the noise gauge.
	printf '{"proxy":"%s","workload":"%s","repeat":%d,"cpu_ticks":%d,"backend_ticks":%d,"wrk_ticks":%d,"machine_ticks":%d,"clk_tck":%d,"wrk":%s}\n' \
		"$p" "$w" "$r" "$ticks" $((b1 - b0)) "$wt" $((m1 - m0)) "$CLK_TCK" "$line" >>"$RAW"
	"$PY" "$ROOT/bench/report.py" --line "$(tail -n1 "$RAW")"
}

echo "bench: $PROXIES | workloads: $WORKLOADS | wrk -t$THREADS -c$CONNS -d${DURATION}s x $REPEATS" \
	"| workers $WORKERS | pinning $([ "$PIN" = 1 ] && echo "wrk+backend on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU" || echo off)"
START=$(date -u +%Y%m%dT%H%M%SZ)
for w in $WORKLOADS; do
	# Warm-up: fills each proxy's upstream pool and the page cache; not measured.
	if [ "$WARMUP" -gt 0 ]; then
		for p in $PROXIES; do
			check_alive "$p" "before the $w warm-up" || continue
			run_wrk "$p" "$w" "$WARMUP" >/dev/null
			check_alive "$p" "during the $w warm-up" || true
		done
	fi
	for r in $(seq "$REPEATS"); do
		for p in $PROXIES; do
			measure "$p" "$w" "$r"
			sleep 0.5
		done
	done
done

mkdir -p "$OUTDIR"
META=$(printf '{"started":"%s","workers":%d,"wrk_threads":%d,"connections":%d,"duration_s":%d,"repeats":%d,"warmup_s":%d,"pinning":"%s","kernel":"%s","cpu":"%s","ncpu":%d,"clawd":"%s","nginx":"%s","haproxy":"%s","wrk":"%s"}' \
	"$START" "$WORKERS" "$THREADS" "$CONNS" "$DURATION" "$REPEATS" "$WARMUP" \
	"$([ "$PIN" = 1 ] && echo "wrk+backend CPU $LOAD_CPU, proxy CPU $PROXY_CPU" || echo off)" \
	"$(uname -r)" "$(lscpu | sed -n 's/^Model name: *//p' | head -n1)" "$(nproc)" \
	"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	"$(nginx -v 2>&1 | sed 's/.*nginx\///')" "$(haproxy -v | sed -n '1s/HAProxy version \([^ ]*\).*/\1/p')" \
	"$(wrk -v 2>&1 | sed -n '1s/^wrk \([^ ]*\).*/\1/p')")
"$PY" "$ROOT/bench/report.py" --raw "$RAW" --meta "$META" --out "$OUTDIR/$START"
