# pathsplice — kernel-spliced HTTP path router
#
#   make            build build/pathsplice (and its BPF object and skeleton)
#   make run        install deps, build, start demo backends and the daemon on :8080
#   make test       install deps, build, run every test; ends with "N passed, N failed"
#   make bench      side-by-side benchmark: direct, HAProxy, nginx, pathsplice
#   make soak       a minute of every traffic shape at once against the ASan build
#   make deps       install the Debian packages the build, tests and bench need
#   make vmlinux    regenerate vmlinux/vmlinux.h from this kernel's BTF
#
# Quiet unless V=1.

.DELETE_ON_ERROR:
.SECONDARY:
.DEFAULT_GOAL := all

OUT	:= build
CLANG	?= clang
CC	:= $(CLANG)
BPFTOOL	?= $(shell command -v bpftool 2>/dev/null || echo /usr/sbin/bpftool)
ARCH	:= $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

INCLUDES := -Iinclude -I$(OUT)
CFLAGS	?= -O2 -g
CFLAGS	+= -DPS_VERSION=\"0.1.0\" -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes \
	   -D_GNU_SOURCE $(INCLUDES)
LDLIBS	:= -lbpf -lelf -lz -ljansson -lcurl -lmicrohttpd
SAN	:= -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) -Ivmlinux -Iinclude \
	      -Wall -Wno-unused-function

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(OUT)/%.bpf.o,$(BPF_SRCS))
SKELS	 := $(patsubst bpf/%.bpf.c,$(OUT)/%.skel.h,$(BPF_SRCS))
HEADERS	 := $(wildcard include/*.h user/*.h)

USER_SRCS := $(wildcard user/*.c)
USER_OBJS := $(patsubst user/%.c,$(OUT)/obj/%.o,$(USER_SRCS))
ASAN_OBJS := $(patsubst user/%.c,$(OUT)/asan/%.o,$(USER_SRCS))
# everything but main(), for the unit tests
LIB_OBJS  := $(filter-out $(OUT)/asan/main.o,$(ASAN_OBJS))

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(OUT)/tests/%,$(UNIT_SRCS))
TOOL_SRCS := $(wildcard tests/tools/*.c)
TOOL_BINS := $(patsubst tests/tools/%.c,$(OUT)/tests/%,$(TOOL_SRCS))
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(OUT)/tests/%,$(FUZZ_SRCS))

.PHONY: all asan tests deps run test bench soak vmlinux clean

all: $(OUT)/pathsplice

asan: $(OUT)/pathsplice-asan

tests: all asan $(UNIT_BINS) $(TOOL_BINS) $(FUZZ_BINS)

$(OUT) $(OUT)/obj $(OUT)/asan $(OUT)/tests:
	$(Q)mkdir -p $@

$(OUT)/%.bpf.o: bpf/%.bpf.c $(HEADERS) vmlinux/vmlinux.h | $(OUT)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(OUT)/%.skel.h: $(OUT)/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< > $@

$(OUT)/obj/%.o: user/%.c $(HEADERS) $(SKELS) | $(OUT)/obj
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(OUT)/asan/%.o: user/%.c $(HEADERS) $(SKELS) | $(OUT)/asan
	$(call msg,CC-ASAN,$@)
	$(Q)$(CC) $(CFLAGS) $(SAN) -c $< -o $@

$(OUT)/pathsplice: $(USER_OBJS)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

$(OUT)/pathsplice-asan: $(ASAN_OBJS)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $(SAN) $^ $(LDLIBS) -o $@

$(OUT)/tests/test_%: tests/unit/test_%.c $(LIB_OBJS) $(HEADERS) | $(OUT)/tests
	$(call msg,CC-TEST,$@)
	$(Q)$(CC) $(CFLAGS) $(SAN) $< $(LIB_OBJS) $(LDLIBS) -lcmocka -o $@

$(OUT)/tests/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_OBJS) $(HEADERS) | $(OUT)/tests
	$(call msg,CC-FUZZ,$@)
	$(Q)$(CC) $(CFLAGS) $(SAN) -fsanitize=fuzzer $< $(LIB_OBJS) $(LDLIBS) -o $@

$(OUT)/tests/%: tests/tools/%.c $(wildcard tests/tools/*.h) | $(OUT)/tests
	$(call msg,CC-TOOL,$@)
	$(Q)$(CC) $(CFLAGS) -pthread $< -lz -o $@

deps:
	$(Q)scripts/deps.sh

run: deps
	$(Q)$(MAKE) --no-print-directory all tests
	$(Q)scripts/demo.sh

test: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)tests/run.sh

bench: deps
	$(Q)$(MAKE) --no-print-directory all tests
	$(Q)scripts/bench.sh

soak: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)scripts/soak.sh

vmlinux:
	$(call msg,GEN,vmlinux/vmlinux.h)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > vmlinux/vmlinux.h

clean:
	$(Q)rm -rf $(OUT)
