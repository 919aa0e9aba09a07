#!/bin/bash
# bench/tls_cpu.sh — proxy CPU per TLS 1.3 keep-alive request (128 B) and per MiB (1 MiB bodies), clawd vs nginx (vs HAProxy), with bench/tls.sh's setup.
#
# Usage: BUILD=build bench/tls_cpu.sh
# Environment: TLS_CPU_DURATION seconds per wrk run (10), TLS_CPU_RUNS rounds (2),
#   TLS_CPU_PROXIES (clawd nginx), TLS_CPU_SIZES (small big), TLS_CPU_OUT (a file for
#   the markdown table, none by default), TLS_CPU_CLAWD_B (a second clawd binary, e.g.
#   the build before a change: it joins as proxy "clawd-b" with the same config, and
#   the table gets a clawd / clawd-b column); bench/tls.sh's TLS_BENCH_CONNS (32),
#   TLS_BENCH_PORT and TLS_BENCH_SUITES apply too.
#   TLS_CPU_MODE=handshakes: instead of requests, the proxy's CPU per full TLS 1.3
#   handshake under bench/tls.sh's four `openssl s_time -new` clients
#   (TLS_BENCH_DURATION s per run, 5), TLS_CPU_PROXIES defaulting to clawd nginx haproxy.
# Measures CPU, not req/s: the two cores are shared with wrk, the backend and other
# work, so a rate says little, while utime+stime of the proxy's processes (all
# threads, nginx master and worker) divided by completed requests stays put.
# Before measuring it checks that every proxy answers 200 with the full body and
# negotiates the same TLS 1.3 suite as the others (else it stops); in handshake mode
# the key-exchange group and the signature type must be the same too.
set -euo pipefail

TLS_BENCH_LIB=1
# shellcheck source=bench/tls.sh
. "$(dirname "${BASH_SOURCE[0]}")/tls.sh"

CDUR=${TLS_CPU_DURATION:-10}
RUNS=${TLS_CPU_RUNS:-2}
MODE=${TLS_CPU_MODE:-requests}
if [ "$MODE" = handshakes ]; then
	CPROXIES=${TLS_CPU_PROXIES:-clawd nginx haproxy}
else
	CPROXIES=${TLS_CPU_PROXIES:-clawd nginx}
fi
SIZES=${TLS_CPU_SIZES:-small big}
OUT=${TLS_CPU_OUT:-}
HZ=$(getconf CLK_TCK)
declare -A BYTES=([small]=128 [big]=$((1 << 20)))
declare -A RES RESU

# A second clawd build, interleaved with the others so the machine's load hits both alike.
if [ -n "${TLS_CPU_CLAWD_B:-}" ]; then
	PORT[clawd-b]=$((BASE + 4))
	sed -e "s|127.0.0.1:${PORT[clawd]}|127.0.0.1:${PORT[clawd-b]}|" -e "s|$W/ctl.sock|$W/ctl-b.sock|" \
		"$W/clawd.yaml" >"$W/clawd-b.yaml"
	CPROXIES="$CPROXIES clawd-b"
fi
start_b() {
	"$TLS_CPU_CLAWD_B" -c "$W/clawd-b.yaml" >"$W/clawd-b.log" 2>&1 & PIDS+=($!)
	PROXY_PID[clawd-b]=$!
	for _ in $(seq 100); do
		openssl s_client -connect "127.0.0.1:${PORT[clawd-b]}" </dev/null >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "tls_cpu.sh: clawd-b did not come up" >&2
	return 1
}

# The suite a default OpenSSL client (as wrk is) gets from proxy $1.
suite_of() {
	openssl s_client -connect "127.0.0.1:${PORT[$1]}" -tls1_3 </dev/null 2>/dev/null |
		awk '/Cipher is/ {print $NF; exit}'
}

# "suite group signature tickets" of a default OpenSSL TLS 1.3 handshake with proxy $1:
# what s_time negotiates too, and how many session tickets the proxy sends per handshake.
hs_params() {
	sleep 0.3 | openssl s_client -connect "127.0.0.1:${PORT[$1]}" -tls1_3 2>/dev/null |
		awk '/Cipher is/ { c = $NF } /Server Temp Key:/ { g = $4; sub(",", "", g) }
		     /Peer signature type:/ { s = $4 } /Post-Handshake New Session Ticket/ { n++ }
		     END { printf "%s %s %s %d\n", c, g, s, n }'
}

# Fails unless GET /$2 through proxy $1 is a 200 with the whole body.
check_body() {
	local got
	got=$(curl -sk -o /dev/null -w '%{http_code} %{size_download}' "https://127.0.0.1:${PORT[$1]}/$2")
	[ "$got" = "200 ${BYTES[$2]}" ] || { echo "tls_cpu.sh: $1 /$2 answered '$got', want '200 ${BYTES[$2]}'" >&2; exit 1; }
}

# "user system" CPU ticks of a proxy: the process (all its threads) and its children
# (nginx's worker). The user part is where TLS records are built in userspace; the
# system part is mostly loopback TCP, charged to whoever sends.
proxy_ticks2() {
	local p u=0 s=0 a b
	for p in "$1" $(pgrep -P "$1"); do
		read -r a b < <(awk '{print $14 + $16, $15 + $17}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
		u=$((u + a)) s=$((s + b))
	done
	echo "$u $s"
}

# One wrk run: prints "requests µs-CPU-per-request µs-user-per-request".
measure() { # proxy path
	local u0 s0 u1 s1 n
	read -r u0 s0 < <(proxy_ticks2 "${PROXY_PID[$1]}")
	n=$(timeout $((CDUR + 30)) wrk -t1 -c"$CONNS" -d"${CDUR}s" "https://127.0.0.1:${PORT[$1]}/$2" 2>/dev/null |
		awk '/requests in/ {print $1; exit}')
	read -r u1 s1 < <(proxy_ticks2 "${PROXY_PID[$1]}")
	n=${n:-0}
	if [ "$n" -eq 0 ]; then echo "0 0 0"; return; fi
	awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$HZ" -v n="$n" \
		'BEGIN { printf "%d %.2f %.2f\n", n, (u + s) * 1e6 / hz / n, u * 1e6 / hz / n }'
}

# Handshake mode: same suite, group and signature everywhere, then interleaved rounds.
if [ "$MODE" = handshakes ]; then
	declare -A HS HSN
	want=
	for p in $CPROXIES; do
		if [ "$p" = clawd-b ]; then start_b; else start "$p"; fi
		check_body "$p" small
		read -r c g s n < <(hs_params "$p")
		HSN[$p]=$n
		echo "$p negotiates $c, group $g, signature $s; sends $n session ticket(s) per handshake"
		[ -z "$want" ] && want="$c $g $s"
		[ "$c $g $s" = "$want" ] || { echo "tls_cpu.sh: $p negotiates $c $g $s, others $want: not comparable" >&2; exit 1; }
	done
	printf "%-4s %-8s %14s %14s\n" run proxy "handshakes/s" "µs CPU/hs"
	for r in $(seq "$RUNS"); do
		for p in $CPROXIES; do
			read -r hs us < <(handshakes "$p")
			HS[$r,$p]=$us
			printf "%-4s %-8s %14s %14s\n" "$r" "$p" "$hs" "$us"
		done
	done
	hs_table() {
		echo "Full TLS 1.3 handshakes ($want), 4 × openssl s_time -new -tls1_3, ${DUR}s per run; proxy CPU = utime+stime / handshakes"
		echo
		echo "| run | $(for p in $CPROXIES; do printf '%s µs/hs | ' "$p"; done)"
		echo "|---|$(for p in $CPROXIES; do printf -- '---|'; done)"
		for r in $(seq "$RUNS"); do
			echo "| $r | $(for p in $CPROXIES; do printf '%s | ' "${HS[$r,$p]}"; done)"
		done
		echo
		echo "Session tickets per full handshake: $(for p in $CPROXIES; do printf '%s %s; ' "$p" "${HSN[$p]}"; done)"
	}
	echo
	hs_table
	if [ -n "$OUT" ]; then hs_table >>"$OUT"; fi
	exit 0
fi

suite=
for p in $CPROXIES; do
	if [ "$p" = clawd-b ]; then start_b; else start "$p"; fi
	s=$(suite_of "$p")
	echo "$p negotiates $s"
	[ -z "$suite" ] && suite=$s
	[ "$s" = "$suite" ] || { echo "tls_cpu.sh: $p negotiates $s, others $suite: not comparable" >&2; exit 1; }
	for z in $SIZES; do check_body "$p" "$z"; done
	wrk -t1 -c"$CONNS" -d1s "https://127.0.0.1:${PORT[$p]}/small" >/dev/null 2>&1 || true # warm-up
done

printf "%-4s %-8s %-6s %12s %14s %14s\n" run proxy body requests "µs CPU/req" "µs user/req"
for r in $(seq "$RUNS"); do
	for z in $SIZES; do
		for p in $CPROXIES; do
			read -r n us uu < <(measure "$p" "$z")
			RES[$r,$z,$p]=$us
			RESU[$r,$z,$p]=$uu
			printf "%-4s %-8s %-6s %12s %14s %14s\n" "$r" "$p" "$z" "$n" "$us" "$uu"
		done
	done
done

# clawd's figure over each other proxy's, per run and body.
table() {
	local r z p
	echo "| run | body | $(for p in $CPROXIES; do printf '%s µs (user) | ' "$p"; done)$(for p in $CPROXIES; do [ "$p" = clawd ] || printf 'clawd / %s | ' "$p"; done)"
	echo "|---|---|$(for p in $CPROXIES; do printf -- '---|'; done)$(for p in $CPROXIES; do [ "$p" = clawd ] || printf -- '---|'; done)"
	for r in $(seq "$RUNS"); do
		for z in $SIZES; do
			printf '| %s | %s | ' "$r" "$([ "$z" = small ] && echo "128 B (per req)" || echo "1 MiB (per MiB)")"
			for p in $CPROXIES; do printf '%s (%s) | ' "${RES[$r,$z,$p]}" "${RESU[$r,$z,$p]}"; done
			for p in $CPROXIES; do
				[ "$p" = clawd ] && continue
				awk -v a="${RES[$r,$z,clawd]:-0}" -v b="${RES[$r,$z,$p]}" \
					'BEGIN { if (b > 0) printf "%.2f× | ", a / b; else printf "- | " }'
			done
			echo
		done
	done
}
echo
echo "TLS 1.3 suite: $suite; wrk -t1 -c$CONNS -d${CDUR}s; proxy CPU = utime+stime / requests"
table
if [ -n "$OUT" ]; then
	{
		echo "TLS 1.3 suite: $suite; wrk -t1 -c$CONNS -d${CDUR}s; proxy CPU = utime+stime / requests"
		echo
		table
	} >>"$OUT"
fi
