# pasyn-sqlite: build the C core and the Lua binding, test, install.
#   make                      build for Lua 5.4 (LUA_VERSION=5.4, 5.3, 5.1 or luajit)
#   make test                 C unit tests, the proofs under power loss and injected faults (ROUNDS=n:
#                             longer), the C-host and C API examples, nginx (spec/nginx/nginx.t),
#                             and every spec under Lua 5.4, 5.3 and LuaJIT, through prove
#   make asan | tsan          the same under AddressSanitizer+UBSan / ThreadSanitizer
#   make test-ext             $(BUILD)/ext_hello.so, the SQLite extension the specs load
#                             (c/test/ext_hello.c; make test, asan and tsan build it)
#   make install PREFIX=/usr/local [DESTDIR=...]   the Lua module (install-lua) and the C
#                             library (install-lib); make uninstall removes them
#   make lib                  build/lib/libpasyn.a and libpasyn.so: the C core alone, for C programs
#                             (make install also installs it, pasyn.h and pasyn.pc)
#   make dist                 build/dist/pasyn-sqlite-<version>.tar.gz, the release archive, from HEAD
#   make rock                 build/dist/pasyn-sqlite-<version>-1.src.rock from that archive (offline)
#   make bench                the benchmark suite, one table, quiet and beside CPU hogs (bench/README.md;
#                             BENCH_SCALE=0.1: quick; BENCH_BUSY=0: quiet machine only),
#                             and its chart in build/ (CHART=bench/chart.svg: the README's)
#   make format | format-check   clang-format (.clang-format) over the C files: rewrite, or only check
#   make proof-crash [ROUNDS=200]   the crash proof: a writing child killed (SIGKILL) ROUNDS
#                             times per synchronous setting, every acknowledged write checked
#   make fuzz [FUZZ_SECONDS=30]   the libFuzzer harnesses of fuzz/ (clang), FUZZ_SECONDS each,
#                             then the random-call fuzzer of the Lua API under the ASan build
#   make lint | demo | clean

# LUA given alone (luarocks passes the interpreter's path, /usr/bin/lua5.3) names the version.
ifeq ($(origin LUA_VERSION)$(origin LUA),undefinedcommand line)
LUA_VERSION := $(if $(filter luajit%,$(notdir $(LUA))),luajit,$(patsubst lua%,%,$(notdir $(LUA))))
endif
LUA_VERSION ?= 5.4
ifeq ($(LUA_VERSION),luajit)
LUA_INCDIR ?= /usr/include/luajit-2.1
LUA ?= luajit
LUA_ABI ?= 5.1
else
LUA_INCDIR ?= /usr/include/lua$(LUA_VERSION)
LUA ?= lua$(LUA_VERSION)
LUA_ABI ?= $(LUA_VERSION)
endif
LUA_NAME = $(notdir $(LUA))

CC ?= cc
CFLAGS ?= -O2 -g
LIBFLAG ?= -shared
WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-function
SQLITE_CFLAGS ?= $(shell pkg-config --cflags sqlite3 2>/dev/null)
SQLITE_LIBS ?= $(shell pkg-config --libs sqlite3 2>/dev/null || echo -lsqlite3)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARN) $(CFLAGS) $(SQLITE_CFLAGS) -Ic
LDLIBS = $(SQLITE_LIBS) -lpthread -lm

PREFIX ?= /usr/local
LUA_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LUA_SHAREDIR ?= $(PREFIX)/share/lua/$(LUA_ABI)
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

BUILD ?= build/$(LUA_NAME)
CORE_SRC = $(wildcard c/*.c)
CORE_OBJ = $(CORE_SRC:c/%.c=$(BUILD)/obj/%.o)
HEADERS = $(wildcard c/*.h)
MODULE = $(BUILD)/pasyn_sqlite/core.so
C_TESTS = $(BUILD)/test_deque $(BUILD)/test_hub $(BUILD)/test_uri $(BUILD)/test_cpu $(PROOFS)
# The proofs under power loss and injected faults (c/test/test_powerloss.c, test_faults.c), on the
# test VFS c/test/testvfs.c; ROUNDS=n runs them longer (PASYN_ROUNDS).
PROOFS = $(BUILD)/test_powerloss $(BUILD)/test_faults
ROUNDS ?=
SPECS = $(sort $(wildcard spec/*_spec.lua))
TEST_LUAS ?= lua5.4 lua5.3 luajit

VERSION := $(shell sed -n 's/^\#define PASYN_VERSION "\(.*\)"/\1/p' c/pasyn.h)
DIST = pasyn-sqlite-$(VERSION)

.PHONY: all lib test test-ext check-c specs asan tsan fuzz proof-crash install install-lua install-lib uninstall \
	uninstall-lua uninstall-lib lint format format-check demo bench dist rock clean FORCE

all: $(MODULE)

# The compiler and flags the objects of $(BUILD) were made with: when they change (another
# Lua's headers in LUA_INCDIR, as luarocks may pass, or other CFLAGS) everything is rebuilt.
$(BUILD)/flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR)' >$@

$(BUILD)/obj/%.o: c/%.c $(HEADERS) $(BUILD)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj/binding.o: lua/pasyn_sqlite/core.c lua/pasyn_sqlite/compat.h c/pasyn.h $(BUILD)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR) -c $< -o $@

$(MODULE): $(BUILD)/obj/binding.o $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The C library: the core's objects linked into one whose only global names are the pasyn_
# functions of pasyn.h (the core's internal ones, such as complete or buf_put, would clash with
# a program's own), archived (libpasyn.a) and shared (libpasyn.so, soname libpasyn.so.$(SOVERSION)).
# SOVERSION goes up with each change of pasyn.h that breaks programs built against it.
SOVERSION = 0
LIB = build/lib
lib:
	@$(MAKE) --no-print-directory BUILD=$(LIB) $(LIB)/libpasyn.a $(LIB)/libpasyn.so

$(BUILD)/pasyn.o: $(CORE_OBJ)
	$(CC) -r -nostdlib -o $@ $^
	objcopy --wildcard --keep-global-symbol='pasyn_*' $@

$(BUILD)/libpasyn.a: $(BUILD)/pasyn.o
	rm -f $@
	$(AR) rcs $@ $<

$(BUILD)/libpasyn.so: $(BUILD)/pasyn.o
	$(CC) $(LIBFLAG) -Wl,-soname,libpasyn.so.$(SOVERSION) $(CFLAGS) $(LDFLAGS) -o $@.$(VERSION) $< $(LDLIBS)
	ln -sf libpasyn.so.$(VERSION) $@.$(SOVERSION)
	ln -sf libpasyn.so.$(SOVERSION) $@

# examples/c_api.c, a program on the C API alone, against build/lib/libpasyn.so (found beside it).
$(LIB)/c_api: examples/c_api.c c/pasyn.h lib
	$(CC) -std=c11 $(WARN) $(CFLAGS) -Ic $(LDFLAGS) -o $@ $< -L$(LIB) -Wl,-rpath,'$$ORIGIN' -lpasyn

# The tiny SQLite extension the specs load (spec/extensions_spec.lua): found beside the module
# (package.cpath), built by make test, asan and tsan (and make test-ext).
EXT_HELLO = $(BUILD)/ext_hello.so
test-ext: $(EXT_HELLO)
$(EXT_HELLO): c/test/ext_hello.c $(BUILD)/flags
	$(CC) -std=c11 -fPIC $(WARN) $(CFLAGS) $(SQLITE_CFLAGS) $(LIBFLAG) $(LDFLAGS) -o $@ $<

$(BUILD)/test_%: c/test/test_%.c c/test/tap.h $(CORE_OBJ)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $(filter-out %.h,$^) $(LDLIBS)

$(PROOFS) $(BUILD)/test_cpu: $(BUILD)/test_%: c/test/test_%.c c/test/testvfs.c c/test/testvfs.h c/test/tap.h $(CORE_OBJ)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $(filter-out %.h,$^) $(LDLIBS)

# The C-host example (README, "Host event loops"): embeds Lua 5.4, so it is built in, and
# loads the module from, a Lua 5.4 build. Run from the repository root.
$(BUILD)/c_host: examples/c_host.c | $(MODULE)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -I/usr/include/lua5.4 $(LDFLAGS) -o $@ $< -llua5.4 -lm -ldl

# Every spec under each Lua of TEST_LUAS, the C tests, the C-host example and a real nginx
# (spec/nginx/nginx.t, with the LuaJIT build), in one prove run.
test:
	@for l in $(TEST_LUAS); do v=$${l#lua}; [ "$$l" = luajit ] && v=luajit; \
	    $(MAKE) --no-print-directory LUA_VERSION=$$v all test-ext || exit 1; done
	@$(MAKE) --no-print-directory $(C_TESTS)
	@$(MAKE) --no-print-directory LUA_VERSION=5.4 build/lua5.4/c_host $(LIB)/c_api
	PASYN_ROUNDS=$(ROUNDS) prove --timer -e spec/run $(C_TESTS) build/lua5.4/c_host $(LIB)/c_api \
	    spec/nginx/nginx.t $(foreach l,$(TEST_LUAS),$(SPECS:%=$(l)/%))

# Sanitizer builds go to their own folders; the Lua interpreter itself is not instrumented,
# so the runtime is preloaded.
ASAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_RUN = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	PASYN_ROUNDS=$(ROUNDS)
asan:
	$(MAKE) --no-print-directory BUILD=build/asan LUA_VERSION=5.4 CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" all test-ext build/asan/test_deque build/asan/test_hub build/asan/test_uri build/asan/test_cpu build/asan/test_powerloss build/asan/test_faults
	ASAN_OPTIONS=detect_leaks=0 build/asan/test_deque && ASAN_OPTIONS=detect_leaks=0 build/asan/test_hub
	build/asan/test_uri
	$(ASAN_RUN) build/asan/test_cpu
	$(ASAN_RUN) build/asan/test_powerloss && $(ASAN_RUN) build/asan/test_faults
	PASYN_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	PASYN_BUILD=build/asan prove --timer -e spec/run $(SPECS:%=lua5.4/%)

# The crash proof (spec/proofs/crash.lua; spec/crash_spec.lua runs a few rounds): ROUNDS per
# synchronous setting (its default, and "full"); SEED replays a run.
ROUNDS ?= 200
proof-crash: $(MODULE)
	LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;" \
	    $(LUA) spec/proofs/crash.lua $(ROUNDS) $(SEED)

# libFuzzer harnesses over the core (fuzz/*.c), built with clang's fuzzer, ASan and UBSan
# (Debian: clang and libclang-rt-14-dev), each run for FUZZ_SECONDS from its seeds in
# fuzz/corpus/<name>/ (what it finds is kept in build/fuzz/corpus-<name>/; a crash's input is
# written to build/fuzz/work-<name>/), in a scratch folder of its own. Then the random-call
# fuzzer of the Lua API (spec/proofs/fuzz_api.lua) for FUZZ_SECONDS under the ASan build.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 30
FUZZERS = bind rows route
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(WARN) $(SQLITE_CFLAGS) -Ic

build/fuzz/%: fuzz/%.c fuzz/fuzz.h $(CORE_SRC) $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(CORE_SRC) $(LDLIBS)

fuzz: $(FUZZERS:%=build/fuzz/%)
	@for h in $(FUZZERS); do \
	    rm -rf build/fuzz/work-$$h && mkdir -p build/fuzz/work-$$h build/fuzz/corpus-$$h && \
	    echo "fuzz: $$h for $(FUZZ_SECONDS) s" && \
	    (cd build/fuzz/work-$$h && ../$$h -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	        -rss_limit_mb=2560 -print_final_stats=1 ../corpus-$$h ../../../fuzz/corpus/$$h \
	        >log 2>&1; s=$$?; grep -E '^(Done|stat::number_of_executed_units)' log; \
	        [ $$s -eq 0 ] || { tail -n 60 log; exit 1; }) || exit 1; \
	done
	$(MAKE) --no-print-directory BUILD=build/asan LUA_VERSION=5.4 CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build/asan/?.so;;" \
	    timeout -s KILL $$(($(FUZZ_SECONDS) + 120)) env \
	    LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	    lua5.4 spec/proofs/fuzz_api.lua --seconds $(FUZZ_SECONDS) $(if $(SEED),--seed $(SEED))

TSAN_FLAGS = -O1 -g -fsanitize=thread
tsan:
	$(MAKE) --no-print-directory BUILD=build/tsan LUA_VERSION=5.4 CFLAGS="$(TSAN_FLAGS)" LDFLAGS="-fsanitize=thread" all test-ext build/tsan/test_deque build/tsan/test_hub build/tsan/test_cpu
	TSAN_OPTIONS=halt_on_error=1 build/tsan/test_deque && TSAN_OPTIONS=halt_on_error=1 build/tsan/test_hub
	TSAN_OPTIONS=halt_on_error=1 build/tsan/test_cpu
	PASYN_PRELOAD="$$($(CC) -print-file-name=libtsan.so)" TSAN_OPTIONS=halt_on_error=1:report_signal_unsafe=0 \
	PASYN_BUILD=build/tsan prove --timer -e spec/run $(SPECS:%=lua5.4/%)

install: install-lua install-lib

# The Lua module alone (luarocks' install step: rockspec/).
install-lua: $(MODULE)
	install -d $(DESTDIR)$(LUA_LIBDIR)/pasyn_sqlite $(DESTDIR)$(LUA_SHAREDIR)/pasyn_sqlite
	install -m 755 $(MODULE) $(DESTDIR)$(LUA_LIBDIR)/pasyn_sqlite/core.so
	install -m 644 lua/pasyn_sqlite.lua $(DESTDIR)$(LUA_SHAREDIR)/pasyn_sqlite.lua
	install -m 644 $(wildcard lua/pasyn_sqlite/*.lua) $(DESTDIR)$(LUA_SHAREDIR)/pasyn_sqlite/

# For C programs: the library, its header and pkg-config's pasyn.pc (pkg-config --cflags --libs
# pasyn). After an install into a system folder, ldconfig (as root) lets programs find it.
install-lib: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(LIB)/libpasyn.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIB)/libpasyn.so.$(VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf libpasyn.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libpasyn.so.$(SOVERSION)
	ln -sf libpasyn.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libpasyn.so
	install -m 644 c/pasyn.h $(DESTDIR)$(INCLUDEDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' pasyn.pc.in >$(DESTDIR)$(PKGCONFIGDIR)/pasyn.pc

uninstall: uninstall-lua uninstall-lib

uninstall-lib:
	rm -f $(DESTDIR)$(LIBDIR)/libpasyn.a $(DESTDIR)$(LIBDIR)/libpasyn.so \
	    $(DESTDIR)$(LIBDIR)/libpasyn.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libpasyn.so.$(VERSION) \
	    $(DESTDIR)$(INCLUDEDIR)/pasyn.h $(DESTDIR)$(PKGCONFIGDIR)/pasyn.pc

uninstall-lua:
	rm -rf $(DESTDIR)$(LUA_LIBDIR)/pasyn_sqlite $(DESTDIR)$(LUA_SHAREDIR)/pasyn_sqlite $(DESTDIR)$(LUA_SHAREDIR)/pasyn_sqlite.lua

lint: format-check
	luacheck lua spec examples bench
	$(MAKE) --no-print-directory -B BUILD=build/lint CFLAGS="-O2 -Werror" all
	$(CC) -std=c11 $(WARN) -Werror -Ic -fsyntax-only examples/c_api.c
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) -Werror $(SQLITE_CFLAGS) -Ic -fsyntax-only $(wildcard fuzz/*.c)

# The C files in the style of .clang-format (clang-format 14).
CLANG_FORMAT ?= clang-format
FORMAT_FILES = $(wildcard c/*.[ch] c/test/*.[ch] lua/pasyn_sqlite/*.[ch] examples/*.c fuzz/*.[ch])
format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check:
	$(CLANG_FORMAT) --dry-run -Werror $(FORMAT_FILES)

demo: $(MODULE)
	LUA_PATH="lua/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;" $(LUA) examples/quickstart.lua
	LUA_PATH="lua/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;" $(LUA) examples/transfers.lua
	LUA_PATH="lua/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;" $(LUA) examples/luv.lua
	LUA_PATH="lua/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;" $(LUA) examples/cqueues.lua

# The benchmark suite (bench/README.md): pasyn_sqlite against LuaDBI, LuaSQL and raw C, one
# table; with gnuplot installed, also a chart, to CHART (CHART=bench/chart.svg: the README's).
CHART ?= build/bench-chart.svg
bench: $(MODULE) build/bench-raw
	LUA_PATH="lua/?.lua;bench/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;" BENCH_CHART="$(CHART)" \
	    $(LUA) bench/suite.lua

build/bench-raw: bench/raw.c
	@mkdir -p build
	$(CC) -O2 -Wall -Wextra $(SQLITE_CFLAGS) bench/raw.c -o $@ $(SQLITE_LIBS)

# The release archive of the rockspec's source.url: what HEAD holds (commit first), under
# $(DIST)/, as GitHub's archive of the tag v$(VERSION) unpacks.
dist:
	@test -f rockspec/$(DIST)-1.rockspec || { echo "no rockspec/$(DIST)-1.rockspec for PASYN_VERSION $(VERSION)"; exit 1; }
	@git diff --quiet HEAD || echo "make dist: uncommitted changes are not in the archive (it is HEAD)"
	@mkdir -p build/dist
	git archive --format=tar.gz --prefix=$(DIST)/ -o build/dist/$(DIST).tar.gz HEAD

# The source rock, made by luarocks pack from the archive of make dist rather than from the
# download (offline): it packs a copy of the rockspec that points at the archive, then puts the
# rockspec itself in its place.
rock: dist
	rm -f build/dist/$(DIST)-1.src.rock
	@mkdir -p build/dist/local
	sed 's|^\(   url = \).*|\1"file://$(CURDIR)/build/dist/$(DIST).tar.gz",|' \
	    rockspec/$(DIST)-1.rockspec >build/dist/local/$(DIST)-1.rockspec
	cd build/dist && luarocks pack local/$(DIST)-1.rockspec
	cp rockspec/$(DIST)-1.rockspec build/dist/
	cd build/dist && zip -q $(DIST)-1.src.rock $(DIST)-1.rockspec

clean:
	rm -rf build
