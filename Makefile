# OpenClaw build: one entry point for deps, build, tests, run, bench and install.

# SAN=1 builds everything with ASan+UBSan into a separate tree so both builds coexist.
ifeq ($(SAN),1)
BUILD   ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   ?= build
SANFLAGS :=
endif

CC      ?= gcc
CLANG   ?= clang
BPFTOOL ?= bpftool
PREFIX  ?= /usr/local
DESTDIR ?=

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 \
	   -D_GNU_SOURCE -Iinclude -Iagent -I$(BUILD)/bpf -I/usr/include/libnl3 -pthread $(SANFLAGS)
LDFLAGS += -pthread $(SANFLAGS)
LDLIBS  := -luring -lyaml -lpcre2-8 -lbpf -lelf -lz -lnl-route-3 -lnl-3 -lssl -lcrypto -lsqlite3 -lm

# Debian packages the build, the tests and the benchmarks need.
DEPS_PKGS := gcc make clang llvm pkg-config libbpf-dev bpftool liburing-dev libyaml-dev \
	     libpcre2-dev libssl-dev libelf-dev zlib1g-dev libnl-3-dev libnl-route-3-dev \
	     libsqlite3-dev libclang-rt-14-dev curl python3 iproute2 procps psmisc \
	     wrk nginx-light haproxy nftables ethtool prometheus tmux qemu-system-x86 cpio \
	     libnginx-mod-stream

AGENT_SRCS := $(sort $(wildcard agent/*.c))
AGENT_LIB_SRCS := $(filter-out agent/main.c,$(AGENT_SRCS))
AGENT_OBJS := $(AGENT_SRCS:%.c=$(BUILD)/%.o)
AGENT_LIB_OBJS := $(AGENT_LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_SRCS   := $(sort $(wildcard cli/*.c))
CLI_OBJS   := $(CLI_SRCS:%.c=$(BUILD)/%.o)

BPF_SRCS  := $(sort $(wildcard bpf/*.bpf.c))
BPF_OBJS  := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.bpf.o)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.skel.h)

UNIT_SRCS := $(sort $(wildcard selftests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:selftests/unit/%.c=$(BUILD)/selftests/unit/%)
BPFT_SRCS := $(sort $(wildcard selftests/bpf/test_*.c))
BPFT_BINS := $(BPFT_SRCS:selftests/bpf/%.c=$(BUILD)/selftests/bpf/%)
FUZZ_SRCS := $(sort $(wildcard selftests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_SRCS:selftests/fuzz/%.c=$(BUILD)/fuzz/%)

ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

.PHONY: all deps test run bench bench-flood vmtest fuzz install clean tests-bin
.DEFAULT_GOAL := all

all: $(BUILD)/clawd $(if $(CLI_SRCS),$(BUILD)/clawctl) $(BPF_OBJS) $(BPF_SKELS)

deps:
	@missing=""; for p in $(DEPS_PKGS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# ---- BPF ---------------------------------------------------------------------
$(BUILD)/bpf/vmlinux.h:
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/bpf/vmlinux.h $(wildcard bpf/*.h include/openclaw/*.h)
	@mkdir -p $(@D)
	$(CLANG) -target bpf -O2 -g -Wall -Werror -D__TARGET_ARCH_$(ARCH) -Iinclude -Ibpf -I$(BUILD)/bpf -c $< -o $@

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $(subst .,_,$*) > $@.tmp && mv $@.tmp $@

# ---- userspace ---------------------------------------------------------------
$(BUILD)/agent/%.o: agent/%.c $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/cli/%.o: cli/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libclawd.a: $(AGENT_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/clawd: $(BUILD)/agent/main.o $(BUILD)/libclawd.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/clawctl: $(CLI_OBJS) $(BUILD)/libclawd.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/selftests/unit/%: selftests/unit/%.c $(BUILD)/libclawd.a selftests/test.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iselftests -MMD -MP $< $(BUILD)/libclawd.a $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/selftests/bpf/%: selftests/bpf/%.c $(BPF_SKELS) $(BUILD)/libclawd.a selftests/test.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iselftests -MMD -MP $< $(BUILD)/libclawd.a $(LDFLAGS) $(LDLIBS) -o $@

# libFuzzer drivers; each one's seed corpus also runs as a regression test.
$(BUILD)/fuzz/%: selftests/fuzz/%.c $(AGENT_LIB_SRCS)
	@mkdir -p $(@D)
	$(CLANG) -std=gnu11 -g -O1 -D_GNU_SOURCE -Iinclude -Iagent -I$(BUILD)/bpf -I/usr/include/libnl3 -fsanitize=fuzzer,address,undefined \
		$< $(AGENT_LIB_SRCS) $(LDLIBS) -pthread -o $@

tests-bin: all $(UNIT_BINS) $(BPFT_BINS) $(if $(filter 1,$(SAN)),,$(FUZZ_BINS))

test: deps
	@$(MAKE) --no-print-directory tests-bin
	@BUILD=$(BUILD) SAN=$(SAN) selftests/run.sh

# New inputs go to a scratch corpus first; the stored seeds are only read.
fuzz: deps $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do n=$$(basename $$f); scratch=$(BUILD)/fuzz/corpus-$${n#fuzz_}; \
		mkdir -p $$scratch; \
		$$f -max_total_time=$${FUZZ_SECONDS:-60} $$scratch selftests/fuzz/corpus/$${n#fuzz_} || exit 1; done

run: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) examples/run-quickstart.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/run.sh

# The packet-guard flood benchmark (network namespaces, root).
bench-flood: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/flood/run.sh

vmtest: deps
	@$(MAKE) --no-print-directory tests-bin
	@BUILD=$(BUILD) vmtest/run.sh

install: all
	install -D -m 0755 $(BUILD)/clawd $(DESTDIR)$(PREFIX)/sbin/clawd
	install -D -m 0755 $(BUILD)/clawctl $(DESTDIR)$(PREFIX)/bin/clawctl
	install -D -m 0644 examples/clawd.service $(DESTDIR)/lib/systemd/system/clawd.service
	@if [ ! -e $(DESTDIR)/etc/openclaw/openclaw.yaml ]; then \
		install -D -m 0640 examples/openclaw.yaml $(DESTDIR)/etc/openclaw/openclaw.yaml; fi
	install -d -m 0750 $(DESTDIR)/var/lib/openclaw $(DESTDIR)/var/log/openclaw

clean:
	rm -rf build build-san

-include $(shell find $(BUILD)/agent $(BUILD)/cli $(BUILD)/selftests -type f -name '*.d' 2>/dev/null)
