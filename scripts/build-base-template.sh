#!/usr/bin/env bash
# Builds the platform template `base` into <dataDir>/templates/base: Debian bookworm with python3,
# nodejs, git, curl and a `user` account (uid 1000). Cached: exits at once if it already exists.
# Built in a hidden temp dir beside it and renamed into place only when complete, so a half-built
# template is never visible (TemplateStore sweeps a temp dir left by a killed build).
set -euo pipefail

data_dir=${1:?usage: build-base-template.sh <dataDir>}
suite=bookworm
name=base
platform_team=00000000-0000-0000-0000-000000000000
packages=python3,nodejs,git,curl,ca-certificates,procps,bash,passwd

templates=$data_dir/templates
final=$templates/$name
if [[ -f $final/template.json ]]; then
  echo "build-base-template: $final already built"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "build-base-template: mmdebstrap is missing; run 'make system-deps'" >&2; exit 1; }

mkdir -p "$templates"
tmp=$(mktemp -d "$templates/.tmp-$name-XXXXXX")
trap 'rm -rf --one-file-system "$tmp"' EXIT
chmod 0755 "$tmp" # apt's download user _apt must reach the chroot's lists

# This host's own Debian mirror (it may be the only one reachable): every bookworm, -updates and
# -security entry of its apt sources, one-line or deb822, as one-line entries for mmdebstrap.
sources=$tmp/sources.list
shopt -s nullglob
for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [[ -f $file ]] || continue
  awk -v suite="$suite" '
    $1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++;
                  if ($(i+1) == suite || $(i+1) == suite "-updates" || $(i+1) == suite "-security") print }' "$file" >>"$sources"
done
for file in /etc/apt/sources.list.d/*.sources; do
  awk -v suite="$suite" '
    function flush(   n, m, s, u, i, j) {
      if (enabled != "no" && types ~ /(^| )deb( |$)/) {
        n = split(suites, s, " "); m = split(uris, u, " ")
        for (i = 1; i <= n; i++) if (s[i] == suite || s[i] == suite "-updates" || s[i] == suite "-security")
          for (j = 1; j <= m; j++) printf "deb %s%s %s %s\n", (signed != "" ? "[signed-by=" signed "] " : ""), u[j], s[i], comps
      }
      types = uris = suites = comps = signed = enabled = ""
    }
    /^[ \t]*$/ { flush(); next }
    /^#/ { next }
    { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, ""); value = $0 }
    key == "types" { types = value } key == "uris" { uris = value } key == "suites" { suites = value }
    key == "components" { comps = value } key == "signed-by" { signed = value } key == "enabled" { enabled = tolower(value) }
    END { flush() }' "$file" >>"$sources"
done
if [[ ! -s $sources ]]; then
  echo "deb http://deb.debian.org/debian $suite main" >"$sources"
fi
echo "build-base-template: building $name from:" && sed 's/^/  /' "$sources"

started=$(date +%s)
mmdebstrap --variant=minbase --include="$packages" \
  --customize-hook='chroot "$1" useradd --create-home --uid 1000 --user-group --shell /bin/bash user' \
  --customize-hook='mkdir -p "$1/opt/wrenn"' \
  "$suite" "$tmp/rootfs" "$sources"
rm -f "$sources"

size_bytes=$(du -s --apparent-size --block-size=1 "$tmp/rootfs" | cut -f1)
printf '{\n  "name": "%s",\n  "teamId": "%s",\n  "kind": "base",\n  "sizeBytes": %s,\n  "createdAt": %s,\n  "metadata": { "suite": "%s" }\n}\n' \
  "$name" "$platform_team" "$size_bytes" "$(date +%s)" "$suite" >"$tmp/template.json"

# `mv -T` refuses to replace a non-empty directory: a concurrent build that finished first wins.
if ! mv -T "$tmp" "$final" 2>/dev/null; then
  [[ -f $final/template.json ]] || { echo "build-base-template: cannot move $tmp to $final" >&2; exit 1; }
  echo "build-base-template: $final was built concurrently; keeping that one"
  exit 0
fi
trap - EXIT
echo "build-base-template: built $final ($((size_bytes / 1024 / 1024)) MiB) in $(($(date +%s) - started)) s"
