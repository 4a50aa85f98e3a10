#!/usr/bin/env bash
# Installs the Debian packages Wrenn's build and tests need, only when missing.
set -euo pipefail
# postgresql-15: the control plane runs a private PostgreSQL cluster in its data dir (its embedded
# database; make up); the tests run each DB case on one too.
# bash-static: /bin/bash of the tests' `busybox-bash` template (the e2b SDK runs every command in bash).
# chromium: the dashboard's end-to-end tests and screenshots drive it headless (playwright-core).
# qemu-system-x86 qemu-utils: the qemu runtime's microvm and its qcow2 overlays (qemu-img).
# lz4: build-vm-guest.sh decompresses the guest kernel (Debian's is LZ4-compressed) into the ELF
# vmlinux Firecracker boots.
packages=(tini busybox-static bash-static runsc iproute2 nftables e2fsprogs util-linux mmdebstrap postgresql-15 tmux chromium qemu-system-x86 qemu-utils lz4)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
