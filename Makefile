# patience — build, test, install. See README.md.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
# Shell completions, where each shell looks for them by default.
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# systemd units (contrib/systemd/), with @BINDIR@ replaced by BINDIR.
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
CARGO ?= cargo
INSTALL ?= install
# Where the binaries to install are: what `make` built (in CARGO_TARGET_DIR
# when that is set, as cargo does); the install test points it elsewhere.
BUILD_DIR ?= $(or $(CARGO_TARGET_DIR),target)/release
# No builder paths in the binaries (panic messages name the source files of
# dependencies, under the cargo home): the cargo home and this directory get
# fixed names, so the same sources and toolchain give the same bytes
# wherever they are built. trim-paths would do it but is not stable. Any
# RUSTFLAGS from the environment come first.
CARGO_HOME_DIR = $(or $(CARGO_HOME),$(HOME)/.cargo)
REMAP = --remap-path-prefix=$(CARGO_HOME_DIR)=/cargo --remap-path-prefix=$(CURDIR)=/patience
# `make static`: glibc linked statically (crt-static; no musl toolchain
# needed). An explicit --target keeps RUSTFLAGS away from build scripts and
# proc macros, and puts the binaries in target/$(STATIC_TARGET)/release/.
STATIC_TARGET ?= $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
# `make fuzz`: seconds per target (cargo-fuzz on the nightly toolchain).
FUZZ_TIME ?= 180
FUZZ_TARGETS = duration exit_codes config datagram exposition

BINS = patience patienced
MAN1 = $(wildcard man/*.1)
MAN5 = $(wildcard man/*.5)
MAN8 = $(wildcard man/*.8)
UNITS = patienced.service patience-services@.service

.PHONY: all build static test bench fuzz install uninstall clean

all: build

# FEATURES: the Redis store of --state-url (`make FEATURES=` builds the
# file store only).
FEATURES ?= redis

build:
	RUSTFLAGS='$(strip $(RUSTFLAGS) $(REMAP))' $(CARGO) build --release --locked --features '$(FEATURES)'

static:
	RUSTFLAGS='$(strip $(RUSTFLAGS) -C target-feature=+crt-static $(REMAP))' $(CARGO) build --release --locked --features '$(FEATURES)' --target $(STATIC_TARGET)
	@t=$${CARGO_TARGET_DIR:-target}; ls -l $$t/$(STATIC_TARGET)/release/patience $$t/$(STATIC_TARGET)/release/patienced

# Every test binary runs to the end (one failure does not hide the rest);
# a test that cannot run here adds a line to test-skips in the target dir
# (tests/common/mod.rs), counted at the end. Under CI=true a skip fails.
test:
	@t=$${CARGO_TARGET_DIR:-target}; mkdir -p "$$t" && : > "$$t/test-skips"; \
	$(CARGO) test --locked --no-fail-fast -- --test-threads=4; rc=$$?; \
	n=$$(wc -l < "$$t/test-skips"); \
	echo "make test: $$n skipped$$([ "$$n" = 0 ] || echo ':')"; \
	sed 's/^skipped: /  /' "$$t/test-skips"; exit $$rc

bench: build
	sh tests/bench/run.sh

# Each target runs FUZZ_TIME seconds from the seeds in fuzz/seeds/ and
# what earlier runs found (fuzz/corpus/, not committed).
fuzz:
	@$(CARGO) +nightly fuzz --version >/dev/null 2>&1 || { \
	    echo 'make fuzz needs cargo-fuzz and a nightly toolchain:' >&2; \
	    echo '  rustup toolchain install nightly && cargo install cargo-fuzz' >&2; exit 1; }
	for t in $(FUZZ_TARGETS); do \
	    mkdir -p fuzz/corpus/$$t && \
	    $(CARGO) +nightly fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- -max_total_time=$(FUZZ_TIME) || exit 1; \
	done

# Installs what is built and builds nothing (a package build runs `make`
# first); a missing binary stops it before anything is copied.
install:
	@for b in $(BINS); do [ -f $(BUILD_DIR)/$$b ] || { \
	    echo "make install: $(BUILD_DIR)/$$b is missing (run make first, or set BUILD_DIR)" >&2; exit 1; }; done
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	for b in $(BINS); do $(INSTALL) -m 755 $(BUILD_DIR)/$$b $(DESTDIR)$(BINDIR)/$$b || exit 1; done
	# patiencectl(1) is patience called by that name.
	ln -sf patience $(DESTDIR)$(BINDIR)/patiencectl
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	for m in $(MAN1); do $(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man1/ || exit 1; done
	for m in $(MAN5); do $(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man5/ || exit 1; done
	for m in $(MAN8); do $(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man8/ || exit 1; done
	$(INSTALL) -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(INSTALL) -m 644 completions/patience.bash $(DESTDIR)$(BASHCOMPDIR)/patience
	$(INSTALL) -m 644 completions/_patience $(DESTDIR)$(ZSHCOMPDIR)/_patience
	$(INSTALL) -m 644 completions/patience.fish $(DESTDIR)$(FISHCOMPDIR)/patience.fish
	$(INSTALL) -m 644 completions/patiencectl.bash $(DESTDIR)$(BASHCOMPDIR)/patiencectl
	$(INSTALL) -m 644 completions/_patiencectl $(DESTDIR)$(ZSHCOMPDIR)/_patiencectl
	$(INSTALL) -m 644 completions/patiencectl.fish $(DESTDIR)$(FISHCOMPDIR)/patiencectl.fish
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	for u in $(UNITS); do \
	    sed 's|@BINDIR@|$(BINDIR)|g' contrib/systemd/$$u > $(DESTDIR)$(SYSTEMDUNITDIR)/$$u.tmp && \
	    chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u.tmp && \
	    mv -f $(DESTDIR)$(SYSTEMDUNITDIR)/$$u.tmp $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; done

uninstall:
	for b in $(BINS); do rm -f $(DESTDIR)$(BINDIR)/$$b; done
	rm -f $(DESTDIR)$(BINDIR)/patiencectl
	for m in $(MAN1); do rm -f $(DESTDIR)$(MANDIR)/man1/$$(basename $$m); done
	for m in $(MAN5); do rm -f $(DESTDIR)$(MANDIR)/man5/$$(basename $$m); done
	for m in $(MAN8); do rm -f $(DESTDIR)$(MANDIR)/man8/$$(basename $$m); done
	rm -f $(DESTDIR)$(BASHCOMPDIR)/patience $(DESTDIR)$(ZSHCOMPDIR)/_patience $(DESTDIR)$(FISHCOMPDIR)/patience.fish
	rm -f $(DESTDIR)$(BASHCOMPDIR)/patiencectl $(DESTDIR)$(ZSHCOMPDIR)/_patiencectl $(DESTDIR)$(FISHCOMPDIR)/patiencectl.fish
	for u in $(UNITS); do rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/$$u; done

clean:
	$(CARGO) clean
