# tsproxy: build, test, bench, install.
PREFIX ?= /usr/local
CARGO ?= cargo
ROOT := $(shell id -u)

.PHONY: all build test test-deps bench fuzz install uninstall clean deb lintian image image-test

all: build

build:
	CARGO="$(CARGO)" bash scripts/build.sh --release
	@echo "built target/release/tsproxy and target/release/libtsproxy.so"

# Every tier: unit tests, the no-root loopback tier, and (as root) the namespace tier with
# real proxies and the leak meter. As root a missing piece of the namespace tier is an error.
test: test-deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -q -- -D warnings
	CARGO="$(CARGO)" bash scripts/build.sh
	@if [ "$(ROOT)" = 0 ]; then \
		TSPROXY_REQUIRE_NETNS=1 TSPROXY_REQUIRE_STATIC=1 TSPROXY_REQUIRE_GRPC=1 TSPROXY_REQUIRE_IMAGE=1 $(CARGO) test --workspace; rc=$$?; \
		bash tests/netns/topology.sh down; exit $$rc; \
	else \
		echo "make test: not root, the namespace tier will be skipped"; \
		$(CARGO) test --workspace; \
	fi

test-deps:
	@bash scripts/test-deps.sh

install: build
	install -Dm755 target/release/tsproxy $(DESTDIR)$(PREFIX)/bin/tsproxy
	install -Dm755 target/release/libtsproxy.so $(DESTDIR)$(PREFIX)/lib/tsproxy/libtsproxy.so

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/tsproxy $(DESTDIR)$(PREFIX)/lib/tsproxy/libtsproxy.so

# The Debian package, with dpkg-deb: target/debian/tsproxy_<version>-<revision>_<arch>.deb (the
# last line printed is its path). See README, Packaging.
deb:
	@CARGO="$(CARGO)" bash packaging/build-deb.sh

lintian:
	lintian --fail-on error $$(CARGO="$(CARGO)" bash packaging/build-deb.sh | tail -n1)

clean:
	$(CARGO) clean

# The workspace image (image/README.md), with rootful podman. TAILSCALE=standin builds the test
# stand-in instead of tailscale from its apt repository; see image/build.sh for the rest.
IMAGE ?= tsproxy-workspace
TAILSCALE ?= apt
SYSTEMD ?= 0
TSPROXY_INSTALL ?= make
image:
	IMAGE=$(IMAGE) TAILSCALE=$(TAILSCALE) SYSTEMD=$(SYSTEMD) TSPROXY_INSTALL=$(TSPROXY_INSTALL) bash image/build.sh

# The image tests (tests/image.rs): stand-in image, run in the root tier's namespaces, under
# the root-tier lock. The build comes first, outside the lock.
image-test:
	IMAGE=tsproxy-workspace-standin TAILSCALE=standin bash image/build.sh
	$(CARGO) build --tests --test image
	flock /run/tsproxy-netns.lock $(CARGO) test --test image -- --nocapture

bench:
	bash bench/run.sh

# Long property runs of every parser that sees untrusted bytes (not in CI): proxy replies, HTTP
# heads, DNS messages, config values, names, the handshake against a hostile proxy.
FUZZ_CASES ?= 200000
fuzz:
	TSPROXY_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test -p tsproxy-core --release --test fuzz --test secrets --test inet_aton_glibc -- --ignored
