# natsync: the two commands a user needs are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the test suite needs (real parts: libwbxml for cross-checks ...).
APT_TEST_PACKAGES := wireguard-go wireguard-tools libwbxml2-utils libwbxml2-dev bind9 bind9-dnsutils miniupnpd-nftables nftables iproute2 coturn pebble chromium postgresql nginx-light haproxy systemd dovecot-imapd dovecot-lmtpd dovecot-submissiond radicale
FUZZ_SECONDS ?= 20
# Benchmarks (bench/NAME_bench.py) print their figures; never part of the pass/fail suite.
BENCHES := wbxml sync push edge scale relay
# The console's browser test drives Debian's chromium through its chromedriver (Selenium).
APT_TEST_PACKAGES += chromium-driver
# Dovecot's Sieve (Pigeonhole): the IMAP tests' server files its own Sent copies (sent_copy).
APT_TEST_PACKAGES += dovecot-sieve
# sslscan: the server's TLS policy as a scanner sees it (tests/cli/test_server_hardening.py).
APT_TEST_PACKAGES += sslscan

.PHONY: run test venv lint typecheck pytest fuzz bench apt-test clean

run: $(STAMP)
	$(BIN)/natsync up

test: $(STAMP) apt-test lint typecheck pytest fuzz

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  scripts/ensure-apt.sh python3-venv && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }

# The C module (src/natsync/edge/_speedups.c) needs a compiler and Python's headers; without
# them (no root for apt) natsync still installs and runs on its Python parsers, and says so.
$(STAMP): $(VENV)/bin/python pyproject.toml setup.py src/natsync/edge/_speedups.c \
	  src/natsync/edge/_tickets.c src/natsync/edge/_tlsio.c src/natsync/edge/_ssl_layout.h \
	  src/natsync/edge/_steady.c src/natsync/edge/_slots.h src/natsync/wbxml/_speedups.c
	@scripts/ensure-build-tools.sh $(BIN)/python || \
	  echo "note: no C compiler or Python headers; the edge runs on its Python parsers (slower)"
	$(BIN)/python -m pip install -q --upgrade pip
	rm -f src/natsync/edge/_speedups*.so  # a failed rebuild must not leave an old one behind
	rm -f src/natsync/wbxml/_speedups*.so src/natsync/edge/_tickets*.so src/natsync/edge/_tlsio*.so
	rm -f src/natsync/edge/_steady*.so
	$(BIN)/python -m pip install -q -e '.[dev,uvloop]'
	@touch $(STAMP)

venv: $(STAMP)

apt-test:
	@scripts/ensure-apt.sh $(APT_TEST_PACKAGES)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

fuzz: $(STAMP)
	$(BIN)/python fuzz/run_all.py --seconds $(FUZZ_SECONDS)

bench: $(addprefix bench-,$(BENCHES))

bench-%: $(STAMP) apt-test
	@scripts/ensure-apt.sh wrk
	$(BIN)/python bench/$*_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
