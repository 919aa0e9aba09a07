#!/bin/bash
# vmtest/run.sh — boots each kernel of VMTEST_KERNELS under QEMU (TCG) with an initramfs of the selftests and the kTLS probe, prints their TAP, exits with their status.
#
# Usage: BUILD=build vmtest/run.sh [FILTER]     (make vmtest does this)
# Environment (see vmtest/README.md):
#	VMTEST_KERNELS      kernels to boot, space-separated: a series ("6.1", "6.12")
#	                    picks the newest linux-image-<series>*-cloud-amd64 in the
#	                    apt lists; a full package name pins one. Default "6.1".
#	VMTEST_TIMEOUT      seconds before a guest is declared hung and killed (600)
#	VMTEST_TEST_TIMEOUT seconds per test program inside the guest (240)
#	VMTEST_CACHE        downloaded and unpacked packages ($BUILD/vmtest/cache)
#	VMTEST_SHELL=1      after the tests, a shell on the guest console (no timeout)
#	VMTEST_APPEND       extra kernel command line
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
KERNELS=${VMTEST_KERNELS:-6.1}
TIMEOUT=${VMTEST_TIMEOUT:-600}
TEST_TIMEOUT=${VMTEST_TEST_TIMEOUT:-240}
CACHE=${VMTEST_CACHE:-$BUILD/vmtest/cache}
SHELL_MODE=${VMTEST_SHELL:-0}
FILTER=${1:-}
CC=${CC:-gcc}
# SAN=1 (make vmtest SAN=1): the probe gets the Makefile's sanitizers, and the
# guest the sanitizer options selftests/run.sh uses.
SANFLAGS=""
if [ "${SAN:-}" = 1 ]; then
	SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
fi
ARCH_LIBDIR=/lib/x86_64-linux-gnu

# Kernel modules put in the guest: tls requests its ciphers at setsockopt time
# by alias (crypto-gcm(aes), crypto-ccm(aes), crypto-rfc7539(chacha20,poly1305)),
# which no modules.dep closure can see, so whole crypto directories go in,
# plus the modules.dep closure of everything listed.
MODULE_DIRS="kernel/net/tls kernel/crypto kernel/arch/x86/crypto kernel/lib/crypto"
MODULE_FILES="kernel/drivers/net/veth.ko"

passed=0 failed=0 skipped=0 n=0
start_all=$SECONDS

die() { echo "vmtest: $*" >&2; exit 1; }
note() { echo "# vmtest: $*"; }

# tap OK|NOT|SKIP DESCRIPTION [WHY]: one counted TAP line, numbered across the run.
tap() {
	n=$((n + 1))
	case $1 in
	OK) passed=$((passed + 1)); echo "ok $n - $2" ;;
	NOT) failed=$((failed + 1)); echo "not ok $n - $2" ;;
	SKIP) skipped=$((skipped + 1)); echo "ok $n - $2 # SKIP $3" ;;
	esac
}

for tool in qemu-system-x86_64 cpio dpkg apt-get gzip ldd; do
	command -v "$tool" >/dev/null || die "missing $tool (make deps installs qemu-system-x86 and cpio)"
done
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
# apt drops privileges to _apt for downloads; let it write here.
chmod 0777 "$CACHE" 2>/dev/null

# apt_download PKG: the cached .deb of PKG, downloading it first if absent.
# apt-get update runs only when a download fails (stale or missing lists).
apt_download() {
	local pkg=$1 f log="$CACHE/apt.log"

	f=$(ls "$CACHE/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1)
	if [ -z "$f" ]; then
		if ! (cd "$CACHE" && apt-get download -q "$pkg") >"$log" 2>&1; then
			echo "vmtest: $pkg: apt-get download failed, refreshing the package lists" >&2
			apt-get update -qq >>"$log" 2>&1
			(cd "$CACHE" && apt-get download -q "$pkg") >>"$log" 2>&1 ||
				{ sed 's/^/vmtest: apt: /' "$log" >&2; return 1; }
		fi
		f=$(ls "$CACHE/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1)
	fi
	[ -n "$f" ] && echo "$f"
}

# resolve_kernel SERIES|PACKAGE: the linux-image package to boot.
resolve_kernel() {
	local want=$1 re pkg

	case $want in
	linux-image-*) echo "$want"; return 0 ;;
	esac
	re="^linux-image-${want//./\\.}[.-][0-9][0-9a-z.+-]*-cloud-amd64\$"
	pkg=$(apt-cache pkgnames "linux-image-$want" 2>/dev/null | grep -E "$re" | sort -V | tail -n1)
	if [ -z "$pkg" ]; then
		# Offline or no lists yet: a kernel already in the cache will do.
		pkg=$(ls "$CACHE" 2>/dev/null | sed -n 's/_.*\.deb$//p' | grep -E "$re" | sort -V | tail -n1)
	fi
	if [ -z "$pkg" ]; then
		apt-get update -qq >"$CACHE/apt.log" 2>&1
		pkg=$(apt-cache pkgnames "linux-image-$want" 2>/dev/null | grep -E "$re" | sort -V | tail -n1)
	fi
	[ -n "$pkg" ] && echo "$pkg"
}

# unpack DEB DIR: dpkg -x once; the directory is the cache.
unpack() {
	[ -e "$2/.unpacked" ] && return 0
	rm -rf "$2" "$2.tmp"
	dpkg -x "$1" "$2.tmp" && touch "$2.tmp/.unpacked" && mv "$2.tmp" "$2"
}

# Busybox for the guest (and its depmod for the host side).
bb_deb=$(apt_download busybox-static) || die "cannot fetch busybox-static"
unpack "$bb_deb" "$CACHE/busybox" || die "cannot unpack $bb_deb"
BUSYBOX=$CACHE/busybox/bin/busybox
[ -x "$BUSYBOX" ] || die "no busybox in $bb_deb"

# The kTLS probe, built like the selftests (the Makefile builds those).
probe=$BUILD/vmtest/ktls_probe
mkdir -p "$BUILD/vmtest"
if [ ! -x "$probe" ] || [ vmtest/ktls_probe.c -nt "$probe" ] || [ selftests/test.h -nt "$probe" ]; then
	$CC -O2 -g -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 \
		-D_GNU_SOURCE -Iselftests $SANFLAGS vmtest/ktls_probe.c -lcrypto -o "$probe" || die "cannot build $probe"
fi
# The guest TLS programs (each with vmtest/e2e_util.c, their shared helpers), rebuilt when a source is newer.
e2e_build() { # binary source
	local src stale=
	[ -x "$1" ] || stale=1
	for src in "$2" vmtest/e2e_util.c vmtest/e2e_util.h selftests/test.h; do
		[ "$src" -nt "$1" ] && stale=1
	done
	[ -n "$stale" ] || return 0
	$CC -O2 -g -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 \
		-D_GNU_SOURCE -Iselftests $SANFLAGS "$2" vmtest/e2e_util.c -lssl -lcrypto -pthread -o "$1" ||
		die "cannot build $1"
}
# clawd terminating TLS in the guest (vmtest/tls_e2e.c): its client, backend and CA in one program.
tls_e2e=$BUILD/vmtest/tls_e2e
e2e_build "$tls_e2e" vmtest/tls_e2e.c
# clawd re-encrypting to a TLS backend in the guest (vmtest/upstream_tls_e2e.c): kTLS on the upstream socket.
uptls_e2e=$BUILD/vmtest/upstream_tls_e2e
e2e_build "$uptls_e2e" vmtest/upstream_tls_e2e.c

# The test list: group/name of every program to run, or "skip group/name why".
want() { [ -z "$FILTER" ] || [[ "$1" == *"$FILTER"* ]]; }
tests=() skips=()
for t in "$BUILD"/selftests/unit/test_* "$BUILD"/selftests/bpf/test_* "$probe" "$tls_e2e" "$uptls_e2e"; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	name=$(basename "$(dirname "$t")")/$(basename "$t")
	want "$name" || continue
	tests+=("$t")
done
[ ${#tests[@]} -gt 0 ] || die "no test programs under $BUILD/selftests matching '${FILTER}' (make tests-bin first)"

# test_guard_attach needs `ip netns` and veth: busybox ip has neither, so the
# host's iproute2 ip goes in with its libraries. Debian's busybox sh runs its
# own applets before anything on PATH, so system("ip ...") would still reach
# busybox ip: /bin/sh in the guest is the host's dash instead.
HOST_IP=$(command -v ip || true)
if [ -n "$HOST_IP" ] && ! "$HOST_IP" -V 2>/dev/null | grep -q iproute2; then
	HOST_IP=
fi
HOST_DASH=$(command -v dash || true)
IP_SKIP=""
[ -n "$HOST_IP" ] || IP_SKIP="no iproute2 ip on the host to copy in (busybox ip has no netns)"
[ -n "$HOST_DASH" ] || IP_SKIP="no dash on the host for /bin/sh (busybox sh runs its own ip applet)"

# Repository files the tests open by relative path (they run from a copy of
# these, as selftests/run.sh runs them from the top of the tree).
DATA_DIRS="examples"

# copy_libs FILE ROOTDIR: FILE's shared libraries and loader (ldd closure) into ROOTDIR.
copy_libs() {
	local f=$1 dst=$2 lib
	ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do
		[ -e "$dst$lib" ] && continue
		mkdir -p "$dst$(dirname "$lib")"
		cp -L "$lib" "$dst$lib"
	done
}

# build_initramfs KVER KDIR OUT: the guest root as a gzipped newc cpio.
build_initramfs() {
	local kver=$1 kdir=$2 out=$3 root="$BUILD/vmtest/$1/root" moddir rel dep t name
	local -A mods=()
	local queue=()

	rm -rf "$root"
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,etc,var,vmtest/tests} || return 1
	ln -s /run "$root/var/run" # iproute2 keeps named netns in /var/run/netns
	cp "$BUSYBOX" "$root/bin/busybox"
	if [ -z "$IP_SKIP" ]; then
		cp -L "$HOST_IP" "$root/sbin/ip"
		copy_libs "$HOST_IP" "$root"
		cp -L "$HOST_DASH" "$root/bin/sh"
		copy_libs "$HOST_DASH" "$root"
	fi
	# Busybox applets as symlinks, without shadowing what is already there (ip).
	"$BUSYBOX" --list-full | while read -r rel; do
		[ -e "$root/$rel" ] || ln -s /bin/busybox "$root/$rel"
	done
	cp vmtest/init "$root/init"
	chmod 0755 "$root/init"
	printf 'VMTEST_SHELL=%s\nVMTEST_TEST_TIMEOUT=%s\n' "$SHELL_MODE" "$TEST_TIMEOUT" >"$root/vmtest/env"
	if [ -n "${ASAN_OPTIONS:-}${UBSAN_OPTIONS:-}" ]; then
		printf 'export ASAN_OPTIONS=%s UBSAN_OPTIONS=%s\n' "${ASAN_OPTIONS:-}" "${UBSAN_OPTIONS:-}" >>"$root/vmtest/env"
	fi

	# Modules: the listed ones and their modules.dep closure.
	moddir=$kdir/lib/modules/$kver
	for rel in $MODULE_DIRS; do
		[ -d "$moddir/$rel" ] || continue
		while read -r t; do queue+=("${t#"$moddir"/}"); done < <(find "$moddir/$rel" -name '*.ko')
	done
	for rel in $MODULE_FILES; do
		[ -f "$moddir/$rel" ] && queue+=("$rel")
	done
	while [ ${#queue[@]} -gt 0 ]; do
		rel=${queue[0]}
		queue=("${queue[@]:1}")
		[ -n "${mods[$rel]:-}" ] && continue
		mods[$rel]=1
		for dep in $(sed -n "s|^${rel//./\\.}:||p" "$moddir/modules.dep"); do
			[ -n "${mods[$dep]:-}" ] || queue+=("$dep")
		done
	done
	for rel in "${!mods[@]}"; do
		mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
		cp "$moddir/$rel" "$root/lib/modules/$kver/$rel"
	done
	cp "$moddir"/modules.builtin* "$moddir"/modules.order "$root/lib/modules/$kver/" 2>/dev/null
	"$BUSYBOX" depmod -b "$root" "$kver" || return 1

	# Tests and their libraries.
	: >"$root/vmtest/tests.list"
	for t in "${tests[@]}"; do
		name=$(basename "$(dirname "$t")")/$(basename "$t")
		mkdir -p "$root/vmtest/tests/$(dirname "$name")"
		cp -L "$t" "$root/vmtest/tests/$name"
		copy_libs "$t" "$root"
		if [ "$name" = unit/test_guard_attach ] && [ -n "$IP_SKIP" ]; then
			echo "skip $name $IP_SKIP" >>"$root/vmtest/tests.list"
		else
			echo "run $name" >>"$root/vmtest/tests.list"
		fi
	done
	# clawd itself, for vmtest/tls_e2e (it runs /vmtest/bin/clawd).
	if [ -x "$BUILD/clawd" ]; then
		mkdir -p "$root/vmtest/bin"
		cp -L "$BUILD/clawd" "$root/vmtest/bin/clawd"
		copy_libs "$BUILD/clawd" "$root"
	fi
	# Python-based end-to-end tests stay on the host (no interpreter in the guest).
	mkdir -p "$root/vmtest/src"
	for t in $DATA_DIRS; do
		cp -a "$t" "$root/vmtest/src/"
	done

	(cd "$root" && find . -mindepth 1 | cpio -o -H newc --quiet) | gzip -1 >"$out"
}

# parse_results KVER RESULTS GUEST_RC: the guest's report as counted TAP lines.
parse_results() {
	local kver=$1 res=$2 grc=$3 line name rc cur="" cur_fail=0 done_seen=0 kernel_seen=""
	local kind why

	while IFS= read -r line; do
		line=${line%$'\r'}
		case $line in
		"VMTEST-KERNEL "*)
			kernel_seen=${line#VMTEST-KERNEL }
			note "$kernel_seen booted"
			;;
		"VMTEST-KTLS "*)
			read -r kind why <<<"${line#VMTEST-KTLS }"
			if [ "$kind" = yes ]; then
				tap OK "$kver kernel: kTLS available ($why)"
			else
				tap NOT "$kver kernel: kTLS available ($why)"
			fi
			;;
		"VMTEST-SKIP "*)
			read -r name why <<<"${line#VMTEST-SKIP }"
			tap SKIP "$kver $name" "$why"
			;;
		"VMTEST-BEGIN "*)
			cur=${line#VMTEST-BEGIN }
			cur_fail=0
			echo "# vmtest $kver $cur"
			;;
		"VMTEST-END "*)
			read -r name rc <<<"${line#VMTEST-END }"
			if [ "$rc" != 0 ] && [ "$cur_fail" -eq 0 ]; then
				# Crashed, killed by the per-test timeout, or failed outside a subtest.
				if [ "$rc" = 137 ]; then
					tap NOT "$kver $name: killed after ${TEST_TIMEOUT}s"
				else
					tap NOT "$kver $name: exited with status $rc"
				fi
			fi
			cur=""
			;;
		VMTEST-DONE)
			done_seen=1
			;;
		*"ERROR: AddressSanitizer"*|*"ERROR: LeakSanitizer"*|*"runtime error:"*)
			echo "# $line"
			[ -n "$cur" ] && [ "$cur_fail" -eq 0 ] && { cur_fail=1; tap NOT "$kver $cur: sanitizer report"; }
			;;
		"ok "[0-9]*|"not ok "[0-9]*)
			local desc=${line#*ok }
			desc=${desc#* }
			desc=${desc#- }
			case $line in
			"not ok "*) cur_fail=1; tap NOT "$kver $cur: $desc" ;;
			*"# SKIP"*) tap SKIP "$kver $cur: ${desc%% # SKIP*}" "${desc#*# SKIP }" ;;
			*) tap OK "$kver $cur: $desc" ;;
			esac
			;;
		[0-9]*..[0-9]*)
			;; # each program's plan; the run has one count at the end
		"#"*)
			echo "$line"
			;;
		*)
			echo "# $line"
			;;
		esac
	done <"$res"

	local why_end="guest died (qemu exit $grc)"
	if [ "$grc" = 124 ] || [ "$grc" = 137 ]; then
		why_end="guest hung: still running after ${TIMEOUT}s, killed (VMTEST_TIMEOUT)"
		note "$kver: $why_end"
	fi
	if [ -n "$cur" ]; then
		tap NOT "$kver $cur: did not finish: $why_end"
	fi
	if [ -z "$kernel_seen" ]; then
		tap NOT "$kver: guest booted to init: $why_end"
	elif [ "$done_seen" -eq 0 ]; then
		tap NOT "$kver: guest ran every test and powered off: $why_end"
	fi
}

# run_kernel SERIES|PACKAGE
run_kernel() {
	local want=$1 pkg kver deb kdir work initrd t0 grc fails_before=$failed
	local -a qemu

	pkg=$(resolve_kernel "$want") || { tap NOT "kernel $want: no linux-image package found in the apt lists"; return; }
	kver=${pkg#linux-image-}
	deb=$(apt_download "$pkg") || { tap NOT "$kver: download $pkg"; return; }
	kdir=$CACHE/$kver
	if [ ! -e "$kdir/.unpacked" ]; then
		unpack "$deb" "$kdir" || { tap NOT "$kver: unpack $deb"; return; }
		# Newer Debian kernels ship compressed modules; busybox insmod wants them plain.
		find "$kdir/lib/modules" -name '*.ko.xz' -exec xz -d {} + 2>/dev/null
		find "$kdir/lib/modules" -name '*.ko.zst' -exec zstd -d -q --rm {} + 2>/dev/null
		"$BUSYBOX" depmod -b "$kdir" "$kver" || { tap NOT "$kver: depmod"; return; }
	fi
	[ -f "$kdir/boot/vmlinuz-$kver" ] || { tap NOT "$kver: no vmlinuz in $deb"; return; }

	work=$BUILD/vmtest/$kver
	mkdir -p "$work"
	initrd=$work/initramfs.cpio.gz
	t0=$SECONDS
	build_initramfs "$kver" "$kdir" "$initrd" || { tap NOT "$kver: build initramfs"; return; }
	note "$kver: initramfs $(du -h "$initrd" | cut -f1) built in $((SECONDS - t0))s, ${#tests[@]} test programs"

	rm -f "$work/console.log" "$work/results.log"
	# TCG, not KVM: this host's KVM cannot run a stock kernel (DESIGN.md).
	qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1G -no-reboot -nodefaults -no-user-config
	      -kernel "$kdir/boot/vmlinuz-$kver" -initrd "$initrd"
	      -append "console=ttyS0 panic=-1 ${VMTEST_APPEND:-}")
	t0=$SECONDS
	if [ "$SHELL_MODE" = 1 ]; then
		"${qemu[@]}" -nographic -serial mon:stdio -serial "file:$work/results.log"
		grc=$?
	else
		timeout --kill-after=5 "$TIMEOUT" "${qemu[@]}" -display none \
			-serial "file:$work/console.log" -serial "file:$work/results.log" </dev/null
		grc=$?
	fi
	note "$kver: guest ran for $((SECONDS - t0))s (qemu exit $grc)"
	touch "$work/results.log"
	parse_results "$kver" "$work/results.log" "$grc"
	if [ "$failed" -gt "$fails_before" ] && [ -s "$work/console.log" ]; then
		note "$kver: last lines of the guest console ($work/console.log):"
		tail -n 40 "$work/console.log" | sed 's/^/#   console: /'
	fi
}

for k in $KERNELS; do
	run_kernel "$k"
done
note "e2e tests (python) run on the host only"
note "total $((SECONDS - start_all))s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
