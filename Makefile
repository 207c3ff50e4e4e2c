# SPDX-License-Identifier: Apache-2.0
#
# Tide's one, non-recursive Makefile.
#   make                 release build into build/release/ (-O2 -g; NDEBUG
#                        drops TIDE_DEBUG_ASSERT, TIDE_ASSERT stays)
#   make MODE=debug      -O0 -g3 into build/debug/
#   make MODE=asan       ASan + UBSan, no recovery, into build/asan/
#   make test            install deps if missing, build, run every test
#   make run             install deps if missing, build, run the main job
#   make fuzz            libFuzzer harnesses, FUZZ_SECONDS (60) each (clang)
#   make format | format-check | clean
# V=1 shows the commands.

MODE ?= release
BUILD := build/$(MODE)
GEN := build/gen
FUZZ_SECONDS ?= 60

ifeq ($(V),1)
Q :=
else
Q := @
endif

CC ?= cc
W := -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror
# -fno-strict-aliasing: column buffers hold f64 bit patterns as u64.
STD := -std=c11 -D_GNU_SOURCE -fno-strict-aliasing

ifeq ($(MODE),release)
OPT := -O2 -g -DNDEBUG
SAN :=
else ifeq ($(MODE),debug)
OPT := -O0 -g3
SAN :=
else ifeq ($(MODE),asan)
OPT := -O1 -g
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
       -fno-omit-frame-pointer
else
$(error MODE must be release, debug or asan, not '$(MODE)')
endif

PKGS := libprotobuf-c liburing liblz4 libxxhash sqlite3 libssl libcrypto \
        libxcrypt libevent libevent_pthreads libevent_openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) criterion 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
# Only test binaries link Criterion: its runtime attaches to a parent test
# run through the environment, which a server started by a test inherits.
TEST_LIBS := $(shell pkg-config --libs criterion 2>/dev/null)

# Each room sees its own directory and the public headers of the rooms
# below it, nothing else, so a wrong include fails to compile:
#   common                          (allocator, asserts, tide/error.h)
#   proto  -> common                (frame codec, wire errors)
#   engine -> common                (storage; knows nothing of accounts)
#   meta   -> common                (the SQLite accounts sidecar)
#   server -> engine, meta, proto   (tided)
#   client -> proto                 (libtide; cli and bench: client.h only)
#   tests  -> anything
COMMON_INC := -Icommon/include
PROTO_INC := -Iproto -I$(GEN) $(COMMON_INC)
ENGINE_INC := -Iengine/include $(COMMON_INC)
META_INC := -Imeta/include $(COMMON_INC)
CLIENT_INC := -Iclient/include $(COMMON_INC)
INCLUDES := -Itests/support -Iengine -Imeta $(PROTO_INC) $(ENGINE_INC) \
            $(META_INC) $(CLIENT_INC)
CFLAGS_ALL = $(STD) $(OPT) $(SAN) $(W) $(INCLUDES) $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(SAN) $(LDFLAGS)

# A changed flag set rebuilds everything: the stamp is rewritten only when
# the effective flags differ from the last build of this mode.
FLAGS_STAMP := $(BUILD)/flags.stamp
FLAGS_LINE := $(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL)
$(shell mkdir -p $(BUILD) && \
    if [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" != '$(FLAGS_LINE)' ]; then \
        echo '$(FLAGS_LINE)' > $(FLAGS_STAMP); fi)

# --- sources (sorted) -------------------------------------------------------

COMMON_SRCS := $(sort $(wildcard common/*.c))
PROTO_SRCS := proto/batch_reader.c proto/frame.c proto/wire_error.c
ENGINE_SRCS := $(sort $(wildcard engine/*.c))
META_SRCS := $(sort $(wildcard meta/*.c))
GEN_SRCS := $(GEN)/tide.pb-c.c
SERVER_SRCS := $(sort $(wildcard server/*.c))
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
INT_SRCS := $(sort $(wildcard tests/integration/test_*.c))
ADV_SRCS := $(sort $(wildcard tests/adversarial/*.c))
SUPPORT_SRCS := $(sort $(wildcard tests/support/*.c))
# --- client: libtide and the tide CLI ---
CLIENT_SRCS := $(sort $(wildcard client/*.c))
CLI_SRCS := $(sort $(wildcard client/cli/*.c))
# --- end client ---

obj = $(patsubst %.c,$(BUILD)/%.o,$(patsubst $(GEN)/%,gen/%,$(1)))

COMMON_OBJS := $(call obj,$(COMMON_SRCS))
PROTO_OBJS := $(call obj,$(PROTO_SRCS) $(GEN_SRCS))
ENGINE_OBJS := $(call obj,$(ENGINE_SRCS))
META_OBJS := $(call obj,$(META_SRCS))
SERVER_OBJS := $(call obj,$(SERVER_SRCS))
UNIT_OBJS := $(call obj,$(UNIT_SRCS))
INT_OBJS := $(call obj,$(INT_SRCS))
ADV_OBJS := $(call obj,$(ADV_SRCS))
SUPPORT_OBJS := $(call obj,$(SUPPORT_SRCS))
# --- client ---
CLIENT_OBJS := $(call obj,$(CLIENT_SRCS))
CLI_OBJS := $(call obj,$(CLI_SRCS))
# PIC objects of libtide.so, client plus the codec and generated code.
CLIENT_PIC_OBJS := $(patsubst $(BUILD)/%,$(BUILD)/pic/%,\
                   $(CLIENT_OBJS) $(PROTO_OBJS) $(COMMON_OBJS))
# --- end client ---

LIBCOMMON := $(BUILD)/libtidecommon.a
LIBPROTO := $(BUILD)/libtideproto.a
LIBENGINE := $(BUILD)/libtideengine.a
LIBMETA := $(BUILD)/libtidemeta.a
UNIT_BIN := $(BUILD)/tests/unit-tests
INT_BIN := $(BUILD)/tests/integration-tests
ADV_BIN := $(BUILD)/tests/adversarial-tests
EXAMPLES_BIN := $(BUILD)/tide-proto-examples
ENGINE_BENCH_BIN := $(BUILD)/engine_bench
META_BENCH_BIN := $(BUILD)/meta_bench
TIDED_BIN := $(BUILD)/tided
DEMO_BIN := $(BUILD)/tide-demo
# --- client ---
LIBTIDE_A := $(BUILD)/libtide.a
LIBTIDE_SO := $(BUILD)/libtide.so
TIDE_BIN := $(BUILD)/tide
# --- end client ---

ALL_OBJS := $(COMMON_OBJS) $(PROTO_OBJS) $(ENGINE_OBJS) $(META_OBJS) $(SERVER_OBJS) \
            $(UNIT_OBJS) $(INT_OBJS) $(ADV_OBJS) \
            $(SUPPORT_OBJS) \
            $(call obj,proto/examples.c bench/engine_bench.c \
            bench/meta_bench.c bench/demo.c) \
            $(CLIENT_OBJS) $(CLI_OBJS) $(CLIENT_PIC_OBJS)

.PHONY: all deps test test-unit test-docs test-integration test-adversarial bench-width \
        bench-security \
        run demo fuzz \
        format format-check clean
.DEFAULT_GOAL := all

all: $(LIBCOMMON) $(LIBPROTO) $(LIBENGINE) $(LIBMETA) $(EXAMPLES_BIN) $(UNIT_BIN) \
     $(ENGINE_BENCH_BIN) $(META_BENCH_BIN) $(TIDED_BIN) $(LIBTIDE_A) \
     $(LIBTIDE_SO) $(TIDE_BIN) $(INT_BIN) $(ADV_BIN) $(DEMO_BIN)

# --- rules ------------------------------------------------------------------

$(GEN)/tide.pb-c.c $(GEN)/tide.pb-c.h &: proto/tide.proto
	@mkdir -p $(GEN)
	@echo "  PROTOC  $<"
	$(Q)protoc-c --proto_path=proto --c_out=$(GEN) $<

# Every object's recipe; the PIC objects add their flags to CFLAGS_ALL.
define compile
	@mkdir -p $(@D)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@
endef

define archive
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^
endef

# Every program's recipe; the test programs add Criterion to PKG_LIBS.
define link
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(PKG_LIBS) -o $@
endef

$(BUILD)/gen/%.o: $(GEN)/%.c $(FLAGS_STAMP)
	$(compile)

$(BUILD)/%.o: %.c $(FLAGS_STAMP) | $(GEN)/tide.pb-c.h
	$(compile)

# Per-room include paths (see INCLUDES above).
$(BUILD)/common/%.o $(BUILD)/pic/common/%.o: INCLUDES = $(COMMON_INC)
$(BUILD)/proto/%.o $(BUILD)/pic/proto/%.o $(BUILD)/gen/%.o \
$(BUILD)/pic/gen/%.o: INCLUDES = $(PROTO_INC)
$(BUILD)/engine/%.o: INCLUDES = -Iengine $(ENGINE_INC)
$(BUILD)/meta/%.o: INCLUDES = -Imeta $(META_INC)
$(BUILD)/server/%.o: INCLUDES = -Iserver $(ENGINE_INC) $(META_INC) $(PROTO_INC)
$(BUILD)/client/%.o $(BUILD)/pic/client/%.o: INCLUDES = -Iclient $(CLIENT_INC) \
    $(PROTO_INC)
$(BUILD)/client/cli/%.o: INCLUDES = $(CLIENT_INC)
$(BUILD)/bench/%.o: INCLUDES = $(CLIENT_INC)
$(BUILD)/bench/engine_bench.o: INCLUDES = $(ENGINE_INC)
$(BUILD)/bench/meta_bench.o: INCLUDES = $(META_INC)

$(LIBCOMMON): $(COMMON_OBJS)
	$(archive)

$(LIBPROTO): $(PROTO_OBJS)
	$(archive)

$(LIBENGINE): $(ENGINE_OBJS)
	$(archive)

$(LIBMETA): $(META_OBJS)
	$(archive)

$(EXAMPLES_BIN): $(call obj,proto/examples.c) $(LIBPROTO) $(LIBCOMMON)
	$(link)

$(ENGINE_BENCH_BIN): $(call obj,bench/engine_bench.c) $(LIBENGINE) $(LIBCOMMON)
	$(link)

$(META_BENCH_BIN): $(call obj,bench/meta_bench.c) $(LIBMETA) $(LIBCOMMON)
	$(link)

$(DEMO_BIN): $(call obj,bench/demo.c) $(LIBTIDE_A)
	$(link)

$(TIDED_BIN): $(SERVER_OBJS) $(LIBMETA) $(LIBENGINE) $(LIBPROTO) $(LIBCOMMON)
	$(link)

# --- client ---
# libtide exports exactly tide/client.h: hidden by default, version script.
CLIENT_CFLAGS := -fvisibility=hidden

$(CLIENT_OBJS) $(CLI_OBJS): CFLAGS_ALL += $(CLIENT_CFLAGS)

$(BUILD)/pic/%.o: CFLAGS_ALL += $(CLIENT_CFLAGS) -fPIC

$(BUILD)/pic/gen/%.o: $(GEN)/%.c $(FLAGS_STAMP)
	$(compile)

$(BUILD)/pic/%.o: %.c $(FLAGS_STAMP) | $(GEN)/tide.pb-c.h
	$(compile)

$(LIBTIDE_A): $(CLIENT_OBJS) $(PROTO_OBJS) $(COMMON_OBJS)
	$(archive)

$(LIBTIDE_SO): $(CLIENT_PIC_OBJS) client/libtide.map
	@echo "  LD      $@"
	$(Q)$(CC) -shared $(LDFLAGS_ALL) -Wl,--version-script=client/libtide.map \
	    -Wl,-soname,libtide.so.1 $(CLIENT_PIC_OBJS) \
	    $(shell pkg-config --libs libprotobuf-c 2>/dev/null) -o $@

$(TIDE_BIN): $(CLI_OBJS) $(LIBTIDE_A)
	$(link)
# --- end client ---

# --- bench: tide-bench, the benchmark harness (docs/bench.md) ---
BENCH_SRCS := bench/hist.c bench/json.c bench/peer.c bench/report.c \
              bench/workload.c
BENCH_OBJS := $(call obj,$(BENCH_SRCS))
TIDE_BENCH_BIN := $(BUILD)/tide-bench
ALL_OBJS += $(BENCH_OBJS) $(call obj,bench/tide_bench.c)

all: $(TIDE_BENCH_BIN)

$(TIDE_BENCH_BIN): $(call obj,bench/tide_bench.c) $(BENCH_OBJS) $(LIBTIDE_A)
	$(link)

# The unit tests link the modules they test; the integration test runs the
# tide-bench binary next to TIDED_BIN.
$(UNIT_BIN): $(BENCH_OBJS)
test-integration: $(TIDE_BENCH_BIN)

.PHONY: bench
# The standard suite against a fresh tided (then VictoriaMetrics when
# installed); writes docs/benchmarks.md.
bench: deps
	@$(MAKE) --no-print-directory $(TIDED_BIN) $(TIDE_BENCH_BIN) \
	    $(ENGINE_BENCH_BIN)
	$(Q)bench/suite.sh $(BUILD)
bench-width: deps
	@$(MAKE) --no-print-directory $(TIDED_BIN) $(TIDE_BENCH_BIN)
	$(Q)bench/width.sh $(BUILD)
bench-security: deps
	@$(MAKE) --no-print-directory $(TIDED_BIN) $(TIDE_BENCH_BIN) $(TIDE_BIN) \
	    $(ENGINE_BENCH_BIN)
	$(Q)bench/security.sh $(BUILD)
# --- end bench ---

$(INT_BIN) $(UNIT_BIN) $(ADV_BIN): PKG_LIBS += $(TEST_LIBS)

$(INT_BIN): $(INT_OBJS) $(SUPPORT_OBJS) $(LIBTIDE_A) $(LIBENGINE) $(LIBPROTO) \
            $(LIBCOMMON)
	$(link)

# The adversarial suite's time bounds are scaled by the build's slowdown
# (tests/adversarial/adv.h): the sanitizer build is about 3x slower.
ifeq ($(MODE),asan)
$(ADV_OBJS): CFLAGS_ALL += -DADV_SCALE=3
endif

$(ADV_BIN): $(ADV_OBJS) $(SUPPORT_OBJS) $(LIBTIDE_A) $(LIBPROTO) $(LIBCOMMON)
	$(link)

$(UNIT_BIN): $(UNIT_OBJS) $(SUPPORT_OBJS) $(LIBMETA) $(LIBENGINE) $(LIBPROTO) \
             $(LIBTIDE_A) $(LIBCOMMON) $(call obj,client/cli/parse.c)
	$(link)

-include $(ALL_OBJS:.o=.d)

# --- jobs -------------------------------------------------------------------

deps:
	@scripts/install-deps.sh

# Dependencies first, then a fresh make that sees the installed packages.
test: deps
	@$(MAKE) --no-print-directory test-unit test-integration
	@$(MAKE) --no-print-directory test-adversarial

# The hex examples in docs/protocol.md are exactly what proto/examples.c
# prints (it also round-trips each frame through the codec).
test-docs: $(EXAMPLES_BIN)
	@echo "  TEST    docs/protocol.md examples"
	$(Q)$(EXAMPLES_BIN) > $(BUILD)/protocol-examples.md
	$(Q)awk '/^<!-- Generated by proto\/examples.c/ { p = 1 } \
	    p && /^## / { exit } p' docs/protocol.md | \
	    diff -u - $(BUILD)/protocol-examples.md

test-unit: $(UNIT_BIN) test-docs
	@echo "  TEST    unit ($(MODE))"
	$(Q)LSAN_OPTIONS=suppressions=$(CURDIR)/tests/support/lsan.supp \
	    $(UNIT_BIN) --short-filename
	@echo "  TEST    unit meta/*, sidecar encrypted ($(MODE))"
	$(Q)TIDE_TEST_META_KEY=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/support/lsan.supp \
	    $(UNIT_BIN) --short-filename --filter 'meta/*'

# The real tided on 127.0.0.1, port 0, temporary data directories.
test-integration: $(INT_BIN) $(TIDED_BIN) $(TIDE_BIN)
	@echo "  TEST    integration ($(MODE))"
	$(Q)TIDED_BIN=$(TIDED_BIN) TIDE_BIN=$(TIDE_BIN) \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/support/lsan.supp \
	    $(INT_BIN) --short-filename

# Attacks against the real tided (docs/testing.md), one at a time (-j1):
# each measures a bystander's latency, so tests must not share the CPUs.
# Under ASan a small quarantine, so that freed memory leaves tided's RSS as
# it would in a release build (the suite checks that RSS falls back).
ifeq ($(MODE),asan)
ADV_ENV := ASAN_OPTIONS=quarantine_size_mb=16
endif
test-adversarial: $(ADV_BIN) $(TIDED_BIN)
	@echo "  TEST    adversarial ($(MODE))"
	$(Q)$(ADV_ENV) TIDED_BIN=$(TIDED_BIN) \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/support/lsan.supp \
	    $(ADV_BIN) --short-filename -j1

# The main job: tided in the foreground on 127.0.0.1:8433 (HTTP :8434) with
# ./tide-data; TLS=1 serves TLS with development certificates. Prints how to
# connect. Ctrl-C stops it cleanly.
run: deps
	@$(MAKE) --no-print-directory $(TIDED_BIN) $(TIDE_BIN)
	$(Q)scripts/run.sh $(BUILD)

# A fleet streamed through libtide for ~10 s, then the reference queries.
demo: deps
	@$(MAKE) --no-print-directory $(TIDED_BIN) $(DEMO_BIN) $(TIDE_BIN)
	$(Q)scripts/demo.sh $(BUILD)

# libFuzzer needs clang; the harnesses (tests/fuzz/, docs/testing.md) have
# their own objects under build/fuzz/obj/, built with the fuzzer's
# coverage and ASan + UBSan. `make fuzz FUZZ_SECONDS=N` runs each harness
# N seconds on a working corpus under build/fuzz/corpus/<harness>/, seeded
# from tests/fuzz/corpus/<harness>/; a crash is saved as
# build/fuzz/<harness>-crash-* and fails the target.
FUZZ_HARNESSES := frame write_columns segment wal
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -fno-strict-aliasing -g -O1 $(W) \
               -Iserver -Iengine -Imeta $(PROTO_INC) $(ENGINE_INC) \
               $(META_INC) $(PKG_CFLAGS) $(FUZZ_SAN)
fuzz_obj = $(patsubst %.c,build/fuzz/obj/%.o,$(patsubst $(GEN)/%,gen/%,$(1)))
FUZZ_PROTO_OBJS := $(call fuzz_obj,$(PROTO_SRCS) $(GEN_SRCS) $(COMMON_SRCS))
FUZZ_ENGINE_OBJS := $(call fuzz_obj,$(ENGINE_SRCS) $(COMMON_SRCS))
# Everything of tided but main() and write.c (which the harness includes).
FUZZ_SERVER_OBJS := $(call fuzz_obj,$(filter-out server/main.c server/write.c,\
                    $(SERVER_SRCS)) $(ENGINE_SRCS) $(META_SRCS) $(PROTO_SRCS) \
                    $(GEN_SRCS) $(COMMON_SRCS))

build/fuzz/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(@D)
	@echo "  CLANG   $@"
	$(Q)clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

build/fuzz/obj/%.o: %.c | $(GEN)/tide.pb-c.h
	@mkdir -p $(@D)
	@echo "  CLANG   $@"
	$(Q)clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

define fuzz_link
	@mkdir -p $(@D)
	@echo "  CLANG   $@"
	$(Q)clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $^ $(PKG_LIBS) -o $@
endef

build/fuzz/fuzz_frame: build/fuzz/obj/tests/fuzz/fuzz_frame.o $(FUZZ_PROTO_OBJS)
	$(fuzz_link)

build/fuzz/fuzz_segment: build/fuzz/obj/tests/fuzz/fuzz_segment.o \
                         $(FUZZ_ENGINE_OBJS)
	$(fuzz_link)

build/fuzz/fuzz_wal: build/fuzz/obj/tests/fuzz/fuzz_wal.o $(FUZZ_ENGINE_OBJS)
	$(fuzz_link)

build/fuzz/fuzz_write_columns: build/fuzz/obj/tests/fuzz/fuzz_write_columns.o \
                               $(FUZZ_SERVER_OBJS)
	$(fuzz_link)

-include $(wildcard build/fuzz/obj/*/*.d build/fuzz/obj/*/*/*.d)

FUZZ_BINS := $(addprefix build/fuzz/fuzz_,$(FUZZ_HARNESSES))

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@# The frame decoder's extra seed: the golden WriteBatch frame, behind
	@# the byte that picks the feed size.
	@mkdir -p build/fuzz/corpus/frame
	@{ printf '\\x10'; grep -v '^#' tests/fixtures/write_batch_v1.hex | \
	    tr -d ' \n' | sed 's/../\\x&/g'; } | xargs -0 printf \
	    > build/fuzz/corpus/frame/seed-write-batch
	$(Q)for h in $(FUZZ_HARNESSES); do \
	    mkdir -p build/fuzz/corpus/$$h && \
	    cp tests/fuzz/corpus/$$h/* build/fuzz/corpus/$$h/ && \
	    echo "  FUZZ    $$h for $(FUZZ_SECONDS) s" && \
	    build/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) \
	        -max_len=65536 -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/$$h- build/fuzz/corpus/$$h \
	        > build/fuzz/$$h.log 2>&1 || \
	        { tail -60 build/fuzz/$$h.log; exit 1; }; \
	    grep -h '^#.*DONE' \
	        build/fuzz/$$h.log | tr '\n' ' '; echo; \
	done

# The seed corpora of the harnesses, from the real writers
# (tests/fuzz/make_seeds.c); the output is committed.
SEEDS_BIN := $(BUILD)/tests/make_seeds
$(SEEDS_BIN): $(call obj,tests/fuzz/make_seeds.c) $(LIBENGINE) $(LIBPROTO) \
              $(LIBCOMMON)
	$(link)

.PHONY: fuzz-seeds
fuzz-seeds: $(SEEDS_BIN)
	$(Q)mkdir -p $(addprefix tests/fuzz/corpus/,frame write_columns wal segment)
	$(Q)$(SEEDS_BIN) tests/fuzz/corpus

FORMAT_SRCS = $(sort $(shell git ls-files '*.c' '*.h' 2>/dev/null))

format:
	$(Q)clang-format -i $(FORMAT_SRCS)

format-check:
	$(Q)clang-format --dry-run --Werror $(FORMAT_SRCS)

clean:
	rm -rf build
