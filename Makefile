# iclear — two commands on a fresh machine:
#   make demo   build, install, start a throwaway cluster and run 1,000+ leads
#   make test   every test tier (engine, #[pg_test], integration)
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo --sudo)
CLUSTER := scripts/cluster.sh

.PHONY: all setup install install-release demo demo-hub profile test test-engine test-pg test-it test-regress test-isolation lint bench bench-engine bench-worker bench-backtest bench-lists bench-hub bench-reliability stop clean

all: test

setup:
	@scripts/setup.sh

# The running demo cluster has iclear.so loaded: stop it before replacing the file.
install: setup
	@$(CLUSTER) stop
	cargo pgrx install --pg-config $(PG_CONFIG) $(PGRX_SUDO)

install-release: setup
	@$(CLUSTER) stop
	cargo pgrx install --release --pg-config $(PG_CONFIG) $(PGRX_SUDO)

demo: install-release
	@scripts/demo.sh

# a hub and two lead stores on loopback (docs/guide/hub.md); stop them with
# scripts/demo-hub.sh stop
demo-hub: install-release
	@scripts/demo-hub.sh

test: setup test-engine test-pg test-it test-regress test-isolation

test-engine:
	cargo test -p iclear-engine -p iclear-services

test-pg: setup
	@$(CLUSTER) stop
	cargo pgrx test pg15 --runas postgres --pgdata /tmp/iclear-pgdata

test-it: install
	cargo test -p iclear-it -- --test-threads=2

# golden SQL tests (tests/pg_regress): the README's walk-through, one file
# per feature (rules, lists, services against the sandbox, caps,
# verification, backtest and shadow, configuration as code, attach, roles),
# every kind of error with its SQLSTATE, each view's columns
test-regress: install
	cargo build -p iclear-services --features sandbox --bin iclear-sandbox
	PATH=$(dir $(PG_CONFIG)):$$PATH scripts/pg-tests.sh regress

# isolation specs (tests/isolation) with pg_isolation_regress on a temporary
# instance with iclear preloaded
test-isolation: install
	PATH=$(dir $(PG_CONFIG)):$$PATH scripts/pg-tests.sh isolation

lint:
	python3 scripts/gen-finalize.py --check
	scripts/gen-upgrade.sh --check
	@# no import circles in the engine, the glue or the store
	python3 scripts/check-cycles.py
	@# every relative link of the README and docs/ resolves
	python3 scripts/check-links.py
	@# released scripts are frozen: an edit fails here (sql/released.sha256)
	scripts/check-released.sh
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: install-release
	@bench/run.sh

# engine evaluation alone (no Postgres): rules per second for 20, 100, 1,000 rules
# where a lead's CPU goes with 8 clients (perf; docs/performance.md)
profile: install-release
	@scripts/profile.sh

bench-engine:
	cargo bench -p iclear-engine --bench rules

# 16 clients for 60 s into an attached table with caps, counters, sync and
# async lookups (a vendor answering in 100-300 ms), then every count
# reconciled; ICLEAR_LOAD_SECONDS / ICLEAR_LOAD_CLIENTS change the load
bench-reliability: install-release
	cargo test --release -p iclear-it --test faults -- --nocapture --test-threads=1

# backtest throughput: 50,000 stored leads replayed against 20 rules and a DNPL
# (ICLEAR_BACKTEST_LEADS changes the count; an ignored integration test)
bench-backtest: install-release
	cargo test --release -p iclear-it --test backtest backtest_throughput -- --ignored --nocapture

# a national-scale phone list: 1,000,000 numbers in one COPY, and probes after it
# (ICLEAR_LIST_NUMBERS changes the count; an ignored integration test)
bench-lists: install-release
	cargo test --release -p iclear-it --test lists -- --ignored --nocapture

# a store as a hub member against a standalone database, a configuration
# change's lag, the lease refill under 8 clients (two clusters on loopback)
bench-hub: install-release
	@bench/hub.sh

# the live worker's jobs/s against the sandbox provider (an ignored integration test)
bench-worker: install-release
	cargo test --release -p iclear-it --test worker worker_throughput -- --ignored --nocapture

stop:
	@$(CLUSTER) stop
	@[ -f target/demo/sandbox.pid ] && kill $$(cat target/demo/sandbox.pid) 2>/dev/null; rm -f target/demo/sandbox.pid
	@ICLEAR_CLUSTER=bench ICLEAR_PORT=28816 $(CLUSTER) stop

clean: stop
	cargo clean
