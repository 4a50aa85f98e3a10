# Wrenn: the two commands a user needs are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NODE_MODULES_STAMP := node_modules/.wrenn-installed

help:
	@echo "make up     run Wrenn on this machine (today: envd on port 49983)"
	@echo "make test   install what the tests need and run every test"
	@echo "make envd   build the self-contained envd directory build/opt-wrenn/"
	@echo "make gen    regenerate protobuf code from proto/"
	@echo "make bench  run the benchmarks under bench/"

# npm packages, installed once per package-lock change. Not `npm ci`: npm 11's ci rejects this
# lockfile over other platforms' optional binaries even when freshly generated; install honours it.
$(NODE_MODULES_STAMP): package.json package-lock.json packages/*/package.json
	npm install --no-audit --no-fund
	@touch $@

deps: $(NODE_MODULES_STAMP)

# Debian packages the tests and the envd bundle need (tini, busybox-static, ...).
system-deps:
	bash scripts/install-system-deps.sh

gen: deps
	npx buf generate && npx buf generate --template buf.gen.hostagent.yaml

typecheck: deps
	npx tsc -p tsconfig.json

envd: deps system-deps
	bash scripts/build-envd.sh

up: deps
	node --import tsx packages/envd/src/main.ts --port $${ENVD_PORT:-49983}

test: deps system-deps
	bash scripts/test.sh

bench: envd
	node --import tsx bench/envd/run.ts

.PHONY: help deps system-deps gen typecheck envd up test bench
