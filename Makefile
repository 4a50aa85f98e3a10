# Wrenn: the two commands a user needs are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NODE_MODULES_STAMP := node_modules/.wrenn-installed
# Where `make up` keeps templates, sandboxes and the host token (gitignored).
WRENN_DATA_DIR ?= $(CURDIR)/.data

help:
	@echo "make up     run Wrenn on this machine: control plane (API :8080, or WRENN_PORT) and a host agent"
	@echo "make test   install what the tests need and run every test"
	@echo "make envd   build the self-contained envd directory build/opt-wrenn/"
	@echo "make vm-guest  build what the qemu runtime's VMs boot: kernel, initramfs, envd's disk image (build/vm/)"
	@echo "make gen    regenerate protobuf code from proto/"
	@echo "make bench  run the benchmarks under bench/ (envd, the host agent, its qemu runtime, the control plane, the edge proxy)"
	@echo "make base-template  build the Debian 'base' template (cached)"
	@echo "make dashboard      build the web dashboard (packages/dashboard/dist, served by the control plane at /)"
	@echo "make screenshots    regenerate docs/screenshots/*.png of every dashboard page (chromium)"

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

# The platform `base` template (Debian bookworm + python3, nodejs, git, curl; user uid 1000). A no-op once built.
base-template: system-deps
	bash scripts/build-base-template.sh $(WRENN_DATA_DIR)/agent

# envd for `make up`, rebuilt only when its sources change: a rebuild swaps build/opt-wrenn (each
# sandbox's /opt/wrenn) under the sandboxes the previous `make up` left running.
ENVD_BUILT := build/opt-wrenn/envd.argv
$(ENVD_BUILT): $(NODE_MODULES_STAMP) scripts/build-envd.sh packages/envd/package.json $(shell find packages/envd/src -type f) | system-deps
	bash scripts/build-envd.sh

# The qemu runtime's guest (scripts/build-vm-guest.sh): kernel, initramfs and envd's disk image,
# rebuilt when its scripts change or envd is rebuilt (the image holds build/opt-wrenn).
VM_GUEST_BUILT := build/vm/guest.json
$(VM_GUEST_BUILT): scripts/build-vm-guest.sh $(wildcard scripts/vm-guest/*) $(ENVD_BUILT) | system-deps
	bash scripts/build-vm-guest.sh

vm-guest: $(VM_GUEST_BUILT)

# The dashboard SPA (packages/dashboard: React, Vite), built into its dist/ only when its sources
# change; the control plane serves it at / (src/api/dashboard-static.ts).
DASHBOARD_BUILT := packages/dashboard/dist/index.html
$(DASHBOARD_BUILT): $(NODE_MODULES_STAMP) packages/dashboard/package.json packages/dashboard/index.html packages/dashboard/vite.config.ts $(shell find packages/dashboard/src -type f)
	cd packages/dashboard && npx vite build --logLevel warn

dashboard: $(DASHBOARD_BUILT)

# docs/screenshots/<page>.png: every page in headless chromium against a real stack (as root: it runs sandboxes).
screenshots: deps system-deps $(ENVD_BUILT) $(DASHBOARD_BUILT)
	node --import tsx scripts/screenshots.ts

# The whole stack in the foreground, as root (scripts/up.ts): the host agent (data in .data/agent,
# RPC on 127.0.0.1:5008, port proxy on 127.0.0.1:5009, two `base` sandboxes kept warm), then the
# control plane (embedded database in .data/control-plane, API on 127.0.0.1:8080 or WRENN_PORT)
# with that agent as its host. Prints the API URL and admin key; Ctrl-C stops both.
# More host agent flags: make up UP_AGENT_FLAGS="--pool 10.201.0.0/16 --port 5108 --proxy-port 5109".
up: deps $(ENVD_BUILT) $(VM_GUEST_BUILT) $(DASHBOARD_BUILT) base-template
	node --import tsx scripts/up.ts --data-dir $(WRENN_DATA_DIR) -- $(UP_AGENT_FLAGS)

test: deps system-deps $(ENVD_BUILT) $(VM_GUEST_BUILT) $(DASHBOARD_BUILT)
	bash scripts/test.sh

bench: envd bench-envd bench-agent bench-qemu bench-control-plane bench-proxy bench-dashboard

bench-envd: envd
	node --import tsx bench/envd/run.ts

bench-agent: envd
	node --import tsx bench/host-agent/run.ts

bench-qemu: envd vm-guest
	node --import tsx bench/host-agent/qemu.ts

bench-control-plane: deps envd
	node --import tsx bench/control-plane/run.ts

bench-proxy: deps system-deps envd
	node --import tsx bench/proxy/run.ts

# The dashboard in chromium: click "Create" → terminal prompt (p50 of 10) beside the API's create → first exec; the JS bundle's gzipped size.
bench-dashboard: deps system-deps $(ENVD_BUILT) $(DASHBOARD_BUILT)
	node --import tsx bench/dashboard/run.ts

.PHONY: help deps system-deps gen typecheck envd vm-guest base-template dashboard screenshots up test bench bench-envd bench-agent bench-qemu bench-control-plane bench-proxy bench-dashboard
