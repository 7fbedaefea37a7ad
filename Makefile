# iclear — two commands on a fresh machine:
#   make demo   build, install, start a throwaway cluster and run 1,000+ leads
#   make test   every test tier (engine, #[pg_test], integration)
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo --sudo)
CLUSTER := scripts/cluster.sh

.PHONY: all setup install install-release demo test test-engine test-pg test-it lint bench bench-engine stop clean

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

test: setup test-engine test-pg test-it

test-engine:
	cargo test -p iclear-engine

test-pg: setup
	@$(CLUSTER) stop
	cargo pgrx test pg15 --runas postgres --pgdata /tmp/iclear-pgdata

test-it: install
	cargo test -p iclear-it --test cluster -- --test-threads=2

lint:
	scripts/gen-upgrade.sh --check
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: install-release
	@bench/run.sh

# engine evaluation alone (no Postgres): rules per second for 20, 100, 1,000 rules
bench-engine:
	cargo bench -p iclear-engine --bench rules

stop:
	@$(CLUSTER) stop
	@ICLEAR_CLUSTER=bench ICLEAR_PORT=28816 $(CLUSTER) stop

clean: stop
	cargo clean
