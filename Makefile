# Tandem: the one entry point. Non-recursive; quiet unless V=1.
#   make            build tandemd, tandemctl and the tests (release)
#   make test       all test tiers; ends with "N passed, N failed, N skipped"
#   make test-unit | test-kernel | test-scenario
#   make fuzz       libFuzzer targets (clang), FUZZ_SECONDS each
#   make bench      Tandem and its peers side by side (keepalived)
#   make demo       a real two-node cluster in namespaces, with a failover
#   make MODE=asan test   ASan+UBSan build of everything
.DEFAULT_GOAL := all
.SECONDEXPANSION:
MODE ?= release
OUT  := build/$(MODE)
CXX  ?= g++

ifeq ($(V),1)
Q :=
else
Q := @
endif

CPPFLAGS := -Ibase/include -Inetlink/include -Ireplication/include -Iebpf/include -Iagent/include -I$(OUT)/ebpf \
            -DBOOST_ASIO_SEPARATE_COMPILATION -DBOOST_ASIO_NO_DEPRECATED
# -Wno-mismatched-new-delete: a GCC 12 false positive on Asio's recycled coroutine frames.
CXXFLAGS := -std=c++20 -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wno-mismatched-new-delete -g -MMD -MP -pipe
LDLIBS   := -luring -lbpf -lelf -lz -lxxhash -lfmt -lcrypto -lsystemd -lpthread
PKG_CFLAGS := $(shell pkg-config --cflags libnl-route-3.0 libnl-genl-3.0 fuse3 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs libnl-route-3.0 libnl-genl-3.0 fuse3 2>/dev/null)
CPPFLAGS += $(PKG_CFLAGS)

ifeq ($(MODE),release)
CXXFLAGS += -O2
else ifeq ($(MODE),asan)
CXXFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
else ifeq ($(MODE),tsan)
CXXFLAGS += -O1 -fsanitize=thread
LDFLAGS  += -fsanitize=thread
else
$(error MODE must be release, asan or tsan, not '$(MODE)')
endif

# ---- components: one static library each; agent -> {netlink, replication, ebpf} -> base
define component
$(1)_SRCS := $$(filter-out $$($(1)_MAINS),$$(wildcard $(1)/src/*.cpp))
$(1)_OBJS := $$($(1)_SRCS:%.cpp=$(OUT)/obj/%.o)
$(1)_LIB  := $(OUT)/lib/libtandem_$(1).a
$$($(1)_LIB): $$($(1)_OBJS)
	@mkdir -p $$(@D)
	@echo "  AR      $$@"
	$(Q)rm -f $$@ && ar rcs $$@ $$^
endef

agent_MAINS := agent/src/tandemd.cpp agent/src/tandemctl.cpp
COMPONENTS := base netlink replication ebpf agent
$(foreach c,$(COMPONENTS),$(eval $(call component,$(c))))

LIBS := $(agent_LIB) $(ebpf_LIB) $(replication_LIB) $(netlink_LIB) $(base_LIB)

# ---- BPF: vmlinux.h from the running kernel's BTF, clang -target bpf, a libbpf
# skeleton that the C++ loader includes. All three are build outputs.
BPF_DIR := $(OUT)/ebpf
$(BPF_DIR)/vmlinux.h:
	@mkdir -p $(@D)
	@echo "  BTF     $@"
	$(Q)bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@
$(BPF_DIR)/%.bpf.o: ebpf/src/%.bpf.c ebpf/include/tandem/ebpf/hb_stats.h $(BPF_DIR)/vmlinux.h
	@echo "  BPF     $<"
	$(Q)clang -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I$(BPF_DIR) -Iebpf/include -c $< -o $@
$(BPF_DIR)/%.skel.h: $(BPF_DIR)/%.bpf.o
	@echo "  SKEL    $@"
	$(Q)bpftool gen skeleton $< name $* > $@.tmp && mv $@.tmp $@
$(BPF_DIR)/null_probe.bpf.o: tests/bench/null_probe.bpf.c $(BPF_DIR)/vmlinux.h
	@echo "  BPF     $<"
	$(Q)clang -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I$(BPF_DIR) -c $< -o $@
$(OUT)/obj/ebpf/src/probe.o: $(BPF_DIR)/hb_probe.skel.h
.SECONDARY: $(BPF_DIR)/hb_probe.bpf.o

$(OUT)/obj/%.o: %.cpp
	@mkdir -p $(@D)
	@echo "  CXX     $<"
	$(Q)$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

TANDEMD   := $(OUT)/bin/tandemd
REPL_BENCH := $(OUT)/bin/tandem-repl-bench
TANDEMCTL := $(OUT)/bin/tandemctl
TESTS_BIN := $(OUT)/bin/tandem-tests

$(TANDEMD): $(OUT)/obj/agent/src/tandemd.o $(LIBS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CXX) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(TANDEMCTL): $(OUT)/obj/agent/src/tandemctl.o $(LIBS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CXX) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(REPL_BENCH): $(OUT)/obj/tests/bench/repl_bench.o $(LIBS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CXX) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

TEST_SRCS := $(wildcard tests/unit/*.cpp tests/scenario/*.cpp tests/support/*.cpp)
TEST_OBJS := $(TEST_SRCS:%.cpp=$(OUT)/obj/%.o)
$(OUT)/obj/tests/%.o: CPPFLAGS += -Itests
$(TESTS_BIN): $(TEST_OBJS) $(LIBS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CXX) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

.PHONY: all deps test test-unit test-kernel test-scenario test-image demo clean format tidy
all: deps
	$(Q)$(MAKE) --no-print-directory -j$(shell nproc) build-only

.PHONY: build-only
build-only: $(TANDEMD) $(TANDEMCTL) $(TESTS_BIN) $(REPL_BENCH)

deps:
	$(Q)scripts/deps.sh

# Test tiers are Catch2 tags; tests/run prints the final tally line.
test: all image-deps
	$(Q)tests/run $(TESTS_BIN) "[unit],[kernel],[scenario],[image]"
test-unit: all
	$(Q)tests/run $(TESTS_BIN) "[unit]"
test-kernel: all
	$(Q)tests/run $(TESTS_BIN) "[kernel]"
test-scenario: all
	$(Q)tests/run $(TESTS_BIN) "[scenario]"
test-image: all image-deps
	$(Q)tests/run $(TESTS_BIN) "[image]"

demo: all
	$(Q)scripts/demo.sh $(OUT)/bin

# The appliance image (image/): Debian 12 with Tandem, GPT by label, booted in qemu.
.PHONY: image image-test image-test-ha image-deps
IMAGE_OUT := build/image
image-deps:
	$(Q)scripts/deps.sh scripts/image-packages.txt
image: all image-deps
	$(Q)image/build.sh $(OUT)/bin $(IMAGE_OUT)
image-test: image
	$(Q)image/test.sh $(IMAGE_OUT)
# Two guests: failover with /store, for the io_uring engine, kernel DRBD and shared storage.
image-test-ha: image
	$(Q)image/test-ha.sh $(IMAGE_OUT) uring
	$(Q)image/test-ha.sh $(IMAGE_OUT) drbd
	$(Q)image/test-ha.sh $(IMAGE_OUT) shared

# Benchmarks measure Tandem and a peer side by side in one run and print ratios.
.PHONY: bench bench-deps bench-failover bench-idle bench-replication bench-store bench-ebpf
bench-deps:
	$(Q)scripts/deps.sh scripts/bench-packages.txt
bench: bench-failover bench-idle bench-replication bench-store bench-ebpf
bench-failover: all bench-deps
	$(Q)scripts/bench-failover.sh $(OUT)/bin
bench-idle: all bench-deps
	$(Q)scripts/bench-idle.sh $(OUT)/bin
bench-replication: all bench-deps $(REPL_BENCH)
	$(Q)scripts/bench-replication.sh $(OUT)/bin
bench-store: all bench-deps $(REPL_BENCH)
	$(Q)scripts/bench-store.sh $(OUT)/bin
bench-ebpf: all bench-deps $(BPF_DIR)/null_probe.bpf.o
	$(Q)scripts/bench-ebpf.sh $(OUT)/bin $(BPF_DIR)/null_probe.bpf.o

clean:
	rm -rf build

format:
	$(Q)scripts/deps.sh scripts/dev-packages.txt
	clang-format -i $(shell git ls-files '*.cpp' '*.hpp')

# clang-tidy over the sources with the flags they are built with (.clang-tidy).
tidy:
	$(Q)scripts/deps.sh scripts/dev-packages.txt
	clang-tidy -quiet $(shell git ls-files 'base/src/*.cpp' 'netlink/src/*.cpp' 'replication/src/*.cpp' 'ebpf/src/*.cpp' 'agent/src/*.cpp') -- \
	    $(CPPFLAGS) -std=c++20

# ---- fuzz targets: every decoder of bytes from the network (clang, libFuzzer + ASan/UBSan)
FUZZ_OUT     := build/fuzz
FUZZ_SECONDS ?= 20
FUZZ_FLAGS   := -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined $(CPPFLAGS) -Inetlink/src
FUZZERS      := heartbeat rtnl icmp repl_frame repl_metadata lease
fuzz_heartbeat_SRCS := agent/src/heartbeat_codec.cpp agent/src/state.cpp base/src/hmac.cpp
fuzz_rtnl_SRCS      := netlink/src/rtnl.cpp
fuzz_icmp_SRCS      := agent/src/icmp.cpp
fuzz_repl_frame_SRCS    := replication/src/protocol.cpp replication/src/metadata.cpp replication/src/error.cpp \
                           base/src/hmac.cpp
fuzz_repl_metadata_SRCS := replication/src/metadata.cpp replication/src/error.cpp
fuzz_lease_SRCS         := agent/src/lease_slot.cpp
$(FUZZ_OUT)/fuzz-%: tests/fuzz/%.cpp $$(fuzz_%_SRCS)
	@mkdir -p $(@D)
	@echo "  FUZZ    $@"
	$(Q)clang++ $(FUZZ_FLAGS) -o $@ $^ $(PKG_LIBS) -lcrypto -lxxhash -lfmt

.PHONY: fuzz
fuzz: deps $(FUZZERS:%=$(FUZZ_OUT)/fuzz-%)
	$(Q)for f in $(FUZZERS); do mkdir -p $(FUZZ_OUT)/corpus/$$f; \
	    echo "  RUN     fuzz-$$f for $(FUZZ_SECONDS) s"; \
	    if ! $(FUZZ_OUT)/fuzz-$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	            -artifact_prefix=$(FUZZ_OUT)/ $(FUZZ_OUT)/corpus/$$f > $(FUZZ_OUT)/$$f.log 2>&1; then \
	        grep -E -A20 "ERROR|SUMMARY" $(FUZZ_OUT)/$$f.log; exit 1; fi; \
	    grep -E "stat::number_of_executed_units|stat::new_units_added" $(FUZZ_OUT)/$$f.log; done

-include $(shell find $(OUT)/obj -name '*.d' 2>/dev/null)
