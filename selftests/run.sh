#!/bin/bash
# selftests/run.sh — runs every test program (unit, BPF, fuzz corpus, end-to-end) and sums their TAP output.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export BUILD ROOT
export CLAWD="$ROOT/$BUILD/clawd" CLAWCTL="$ROOT/$BUILD/clawctl"
# Sanitizer reports fail the test that triggered them.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
FILTER=${1:-}

passed=0 failed=0 skipped=0
failures=()
logdir=$(mktemp -d /tmp/openclaw-tests.XXXXXX)
trap 'rm -rf "$logdir"' EXIT

# run_tap NAME CMD...: runs one test program, echoes its TAP, counts it.
run_tap() {
	local name=$1; shift
	local log="$logdir/$(echo "$name" | tr '/ ' '__').log"
	local start=$SECONDS rc
	timeout --kill-after=10 "${TEST_TIMEOUT:-900}" "$@" >"$log" 2>&1
	rc=$?
	local p f s
	p=$(grep -cE '^ok [0-9]+' "$log" | tr -d ' ')
	s=$(grep -cE '^ok [0-9]+.*# SKIP' "$log" | tr -d ' ')
	f=$(grep -cE '^not ok [0-9]+' "$log" | tr -d ' ')
	p=$((p - s))
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		# Crashed, timed out or a sanitizer fired outside any subtest.
		f=1
	fi
	if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
		[ "$f" -eq 0 ] && f=1
		failures+=("$name")
		echo "--- $name (exit $rc, $((SECONDS - start))s)"
		sed 's/^/    /' "$log" | tail -n 80
	else
		echo "--- $name: $p passed, $s skipped ($((SECONDS - start))s)"
	fi
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
}

want() { [ -z "$FILTER" ] || [[ "$1" == *"$FILTER"* ]]; }

for t in "$BUILD"/selftests/unit/test_*; do
	[ -x "$t" ] || continue
	want "$t" && run_tap "unit/$(basename "$t")" "$t"
done

for t in "$BUILD"/selftests/bpf/test_*; do
	[ -x "$t" ] || continue
	want "$t" || continue
	if [ "$(id -u)" -ne 0 ]; then
		echo "--- bpf/$(basename "$t"): skipped (needs root)"; skipped=$((skipped + 1)); continue
	fi
	run_tap "bpf/$(basename "$t")" "$t"
done

# Each fuzz target's stored corpus replays as a regression test (one subtest per target).
if [ "${SAN:-}" != 1 ]; then
	for f in build/fuzz/fuzz_*; do
		[ -x "$f" ] || continue
		n=$(basename "$f"); corpus="selftests/fuzz/corpus/${n#fuzz_}"
		[ -d "$corpus" ] || continue
		want "$f" || continue
		run_tap "fuzz/$n" bash -c "'$f' -runs=0 '$corpus' >/dev/null 2>&1 && echo 'ok 1 - $n corpus replays clean' || { echo 'not ok 1 - $n corpus replay'; '$f' -runs=0 '$corpus' 2>&1 | tail -20; exit 1; }"
	done
fi

for t in selftests/e2e/test_*.py; do
	[ -f "$t" ] || continue
	want "$t" && run_tap "e2e/$(basename "$t")" "$PY" "$t"
done

for t in selftests/e2e/test_*.sh; do
	[ -f "$t" ] || continue
	want "$t" && run_tap "e2e/$(basename "$t")" bash "$t"
done

if [ ${#failures[@]} -gt 0 ]; then
	echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
