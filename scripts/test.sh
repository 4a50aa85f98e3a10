#!/usr/bin/env bash
# Runs every test: type-check, generated-code freshness, then node's test runner, two test files
# at a time (most of them wait on gVisor sandboxes booting). Every file keeps to its own address
# pool, nftables table, sandbox ids and temp dirs, so any two can run side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.json
bash scripts/check-generated.sh

# build/opt-wrenn is every sandbox's /opt/wrenn, and scripts/build-envd.sh replaces it wholesale.
# Build it here, before any test runs, if it is missing or older than what it is built from
# (what envd's distribution test and `make up`'s rule check), so that no test file rebuilds it
# under the sandboxes of the file running beside it.
envd_bundle=build/opt-wrenn/lib/envd.mjs
envd_sources=(packages/envd/src packages/proto/src packages/envd/package.json scripts/build-envd.sh)
[[ -e node_modules/.wrenn-installed ]] && envd_sources+=(node_modules/.wrenn-installed)
if [[ ! -f build/opt-wrenn/envd.argv || ! -f $envd_bundle || -n $(find "${envd_sources[@]}" -newer "$envd_bundle" -print -quit) ]]; then
  bash scripts/build-envd.sh
fi

# The slowest files first (durations from a CI run, one file at a time), so that the last minutes
# are not one long file running alone; every other file follows in the usual order.
slow_first=(
  packages/control-plane/test/api-sandboxes.test.ts
  packages/cli/test/cli.test.ts
  packages/control-plane/test/make-up.test.ts
  packages/host-agent/test/agent.test.ts
  packages/control-plane/test/template-builds.test.ts
  packages/control-plane/test/e2b-rest.test.ts
  packages/sdk/test/sandbox.test.ts
  packages/control-plane/test/orchestration-sandboxes.test.ts
  packages/sdk/test/resilience.test.ts
  packages/host-agent/test/firewall.test.ts
)
files=()
declare -A listed=()
for file in "${slow_first[@]}" packages/*/test/*.test.ts; do
  [[ -f $file && -z ${listed[$file]:-} ]] || continue
  listed[$file]=1
  files+=("$file")
done

# --test-timeout bounds each test and also each file as a whole: the slowest file took ~3 min
# alone in CI, and runs slower beside another, so 10 min (a hang still fails, later).
node --import tsx --test --test-concurrency=2 --test-timeout=600000 "${files[@]}"
