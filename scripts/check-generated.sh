#!/usr/bin/env bash
# Generated protobuf code is never edited by hand: regenerate and compare.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r packages/proto/src/gen "$tmp/committed"
npx buf generate
npx buf generate --template buf.gen.hostagent.yaml
if ! diff -r "$tmp/committed" packages/proto/src/gen >/dev/null; then
  echo "generated code under packages/proto/src/gen differs from 'buf generate' output; run 'make gen' and commit" >&2
  diff -r "$tmp/committed" packages/proto/src/gen | head -20 >&2
  exit 1
fi
echo "generated protobuf code is up to date"
