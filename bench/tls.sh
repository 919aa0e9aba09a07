#!/bin/bash
# bench/tls.sh — TLS termination side by side: clawd, nginx and HAProxy in front of one plain nginx backend; TLS 1.3 keep-alive req/s (128 B, 1 MiB) and full handshakes/s.
#
# Usage: BUILD=build bench/tls.sh      (environment: TLS_BENCH_DURATION s per run (5),
#        TLS_BENCH_CONNS keep-alive connections (32), TLS_BENCH_PROXIES, TLS_BENCH_PORT (28580),
#        TLS_BENCH_SUITES the TLS 1.3 suites every proxy offers, server order (clawd's default list))
# Keep-alive: wrk over https (TLS 1.3, one handshake per connection).
# Handshakes: `openssl s_time -new` (a full TLS 1.3 handshake per connection,
# no resumption) for the same wall time, from 4 parallel clients.
# Only 127.0.0.1; everything started here is killed on exit. One worker each.
set -euo pipefail

BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
ROOT=$PWD
CLAWD=${CLAWD:-$ROOT/$BUILD/clawd}
DUR=${TLS_BENCH_DURATION:-5}
CONNS=${TLS_BENCH_CONNS:-32}
PROXIES=${TLS_BENCH_PROXIES:-clawd nginx haproxy}
BASE=${TLS_BENCH_PORT:-28580}
BE=$BASE
declare -A PORT=([clawd]=$((BASE + 1)) [nginx]=$((BASE + 2)) [haproxy]=$((BASE + 3)))
PIDS=()
declare -A PROXY_PID
W=$(mktemp -d /tmp/clawd-tlsbench-XXXXXX)
chmod 755 "$W" # nginx workers run as an unprivileged user and must read the bodies (else every answer is a 403)
# One TLS 1.3 suite policy for every proxy: clawd's default list, the server's order wins.
# Without it nginx and HAProxy follow the client (wrk offers AES-256-GCM first) and clawd picks AES-128-GCM.
SUITES=${TLS_BENCH_SUITES:-TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256}

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

for t in wrk nginx haproxy openssl; do
	command -v "$t" >/dev/null || { echo "tls.sh: missing $t (make deps)" >&2; exit 1; }
done
[ -x "$CLAWD" ] || { echo "tls.sh: no $CLAWD (make first)" >&2; exit 1; }

# A P-256 certificate (what most sites serve now) and a 128 B and 1 MiB file.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/key.pem" \
	-out "$W/cert.pem" -days 2 -subj /CN=bench.test 2>/dev/null
chmod 600 "$W/key.pem"
mkdir -p "$W/www"
head -c 128 /dev/zero | tr '\0' a >"$W/www/small"
head -c $((1 << 20)) /dev/zero | tr '\0' b >"$W/www/big"

# The plain backend: nginx serving the files.
cat >"$W/be.conf" <<EOF
worker_processes 1; daemon off; pid $W/be.pid; error_log $W/be.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BE; root $W/www; } }
EOF
nginx -c "$W/be.conf" -p "$W" & PIDS+=($!)

cat >"$W/clawd.yaml" <<EOF
workers: 1
control: { socket: $W/ctl.sock }
listeners:
  - name: tls
    address: 127.0.0.1:${PORT[clawd]}
    tls:
      certificates:
        - { cert: $W/cert.pem, key: $W/key.pem }
      ciphersuites: $SUITES
upstreams:
  - name: be
    keepalive: 64
    servers: [ { address: 127.0.0.1:$BE } ]
routes:
  - { name: all, upstream: be }
EOF
cat >"$W/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $W/ng.pid; error_log $W/ng.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$BE; keepalive 64; }
  server { listen 127.0.0.1:${PORT[nginx]} ssl; ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:S:10m;
    ssl_prefer_server_ciphers on; ssl_conf_command Ciphersuites $SUITES;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
cat "$W/cert.pem" "$W/key.pem" >"$W/both.pem"
cat >"$W/haproxy.cfg" <<EOF
global
  nbthread 1
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ssl-default-bind-ciphersuites $SUITES
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:${PORT[haproxy]} ssl crt $W/both.pem
  default_backend b
backend b
  http-reuse always
  server s 127.0.0.1:$BE
EOF

start() {
	case $1 in
	clawd) "$CLAWD" -c "$W/clawd.yaml" >"$W/clawd.log" 2>&1 & PIDS+=($!) ;;
	nginx) nginx -c "$W/nginx.conf" -p "$W" & PIDS+=($!) ;;
	haproxy) haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 & PIDS+=($!) ;;
	esac
	PROXY_PID[$1]=$!
	for _ in $(seq 100); do
		openssl s_client -connect "127.0.0.1:${PORT[$1]}" </dev/null >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "tls.sh: $1 did not come up" >&2
	return 1
}

rps() { # proxy path
	wrk -t1 -c"$CONNS" -d"${DUR}s" "https://127.0.0.1:${PORT[$1]}/$2" 2>/dev/null |
		awk '/Requests\/sec/ {print int($2)}'
}

# CPU ticks (user + system) of a process and its children (nginx's worker).
proxy_ticks() {
	local p t=0
	for p in "$1" $(pgrep -P "$1"); do
		t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo $t
}

# proxy: full TLS 1.3 handshakes per second, 4 clients in parallel, and the
# proxy's own CPU per handshake in µs. The clients share the two cores with the
# proxy, so the rate mostly measures who leaves CPU to s_time; the CPU per
# handshake is what the proxy controls.
handshakes() {
	local i total=0 n pids=() t0 t1 hz
	hz=$(getconf CLK_TCK)
	t0=$(proxy_ticks "${PROXY_PID[$1]}")
	for i in 1 2 3 4; do
		timeout $((DUR + 30)) openssl s_time -connect "127.0.0.1:${PORT[$1]}" -new -tls1_3 \
			-time "$DUR" >"$W/st.$i" 2>&1 &
		pids+=($!)
	done
	wait "${pids[@]}" || true
	for i in 1 2 3 4; do
		n=$(awk '/connections in [0-9]+ real seconds/ {print $1; exit}' "$W/st.$i")
		total=$((total + ${n:-0}))
	done
	t1=$(proxy_ticks "${PROXY_PID[$1]}")
	echo "$((total / DUR)) $(( total ? (t1 - t0) * 1000000 / hz / total : 0 ))"
}

# Sourced by bench/tls_cpu.sh for the setup above (configs, backend, start, proxy_ticks) only.
if [ "${TLS_BENCH_LIB:-0}" = 1 ]; then return 0; fi

printf "%-8s %14s %14s %16s %14s\n" proxy "128B req/s" "1MiB req/s" "handshakes/s" "µs CPU/hs"
for p in $PROXIES; do
	start "$p"
	small=$(rps "$p" small)
	big=$(rps "$p" big)
	read -r hs hscpu < <(handshakes "$p")
	printf "%-8s %14s %14s %16s %14s\n" "$p" "${small:-0}" "${big:-0}" "${hs:-0}" "${hscpu:-0}"
done
