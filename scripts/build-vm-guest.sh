#!/usr/bin/env bash
# Builds build/vm/: everything a Wrenn VM (qemu microvm, Firecracker) boots to envd with.
#   vmlinuz         Debian's cloud kernel (the package linux-image-cloud-amd64 points at)
#   vmlinux         the same kernel uncompressed (an ELF): Firecracker on x86_64 loads no bzImage
#   initrd.img      busybox, the virtio modules, resize2fs and scripts/vm-guest/init (gzip'd newc cpio)
#   opt-wrenn.ext4  build/opt-wrenn as a read-only ext4 image: the VM's /opt/wrenn (/dev/vdb)
#   guest.json      kernelVersion, vmlinux, inputsHash (of everything above's inputs), envdHash
# The kernel is never installed on the host: its .deb is downloaded into build/vm/cache and
# unpacked. Outputs are replaced by rename, so a running VM keeps the files it opened; a build
# whose inputs hash to what guest.json says changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/vm
cache=$out/cache
envd_dir=build/opt-wrenn
busybox=/bin/busybox
resize2fs=/sbin/resize2fs
init_script=scripts/vm-guest/init
kernel_metapackage=linux-image-cloud-amd64
# What the initramfs loads; their dependencies (virtio, virtio_ring, net_failover, failover) are
# added from each module's own `depends=`. virtio_rng: Node blocks in getrandom() until the
# kernel's RNG is seeded, which under TCG (no RDRAND) takes ~1.5 s longer without a
# virtio-rng-device to seed it.
wanted_modules=(virtio_mmio virtio_blk virtio_net virtio_rng)

die() { echo "build-vm-guest: $*" >&2; exit 1; }

[[ -f $envd_dir/envd.argv ]] || die "$envd_dir/envd.argv is missing; run 'make envd'"
[[ -x $busybox ]] && "$busybox" --list | grep -qx switch_root || die "$busybox (static, with switch_root) is missing; run 'make system-deps' (Debian package busybox-static)"
[[ -x $resize2fs ]] || die "$resize2fs is missing; run 'make system-deps' (Debian package e2fsprogs)"
command -v mke2fs >/dev/null || die "mke2fs is missing; run 'make system-deps' (Debian package e2fsprogs)"
mkdir -p "$cache"

# The concrete kernel package (linux-image-<abi>-cloud-amd64) and version the metapackage names
# today; offline or without apt lists, the newest one already in the cache.
kernel_package=$(apt-cache depends "$kernel_metapackage" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }') || true
kernel_deb=""
if [[ -n $kernel_package ]]; then
  package_version=$(apt-cache show --no-all-versions "$kernel_package" | awk '$1 == "Version:" && !found { print $2; found = 1 }')
  kernel_deb=$cache/${kernel_package}_${package_version#*:}_amd64.deb
  if [[ ! -f $kernel_deb ]]; then
    echo "build-vm-guest: downloading $kernel_package $package_version"
    download_dir=$(mktemp -d "$cache/download.XXXXXX")
    # apt verifies the .deb against its signed index; the rename keeps a partial file out of the cache.
    (cd "$download_dir" && apt-get download -q "$kernel_package=$package_version" 2>&1 | grep -v "Download is performed unsandboxed" || true)
    mv "$download_dir"/*.deb "$kernel_deb" 2>/dev/null || { rm -rf "$download_dir"; die "apt-get download $kernel_package=$package_version failed"; }
    rm -rf "$download_dir"
  fi
else
  kernel_deb=$(ls -1 "$cache"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | sort -V | tail -n 1) || true
  [[ -n $kernel_deb ]] || die "apt-cache knows no $kernel_metapackage and $cache has no kernel .deb; run 'apt-get update'"
  echo "build-vm-guest: $kernel_metapackage unresolved; using the cached $(basename "$kernel_deb")"
fi

# Everything the outputs are made of: when this hash matches guest.json, nothing is rebuilt.
ldd_paths() { ldd "$1" | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }'; }
envd_hash=$(cd "$envd_dir" && find . \( -type f -o -type l \) -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
inputs_hash=$( {
  sha256sum "$kernel_deb" "$busybox" "$resize2fs" $(ldd_paths "$resize2fs") "$init_script" scripts/build-vm-guest.sh
  echo "modules ${wanted_modules[*]}"
  echo "envd $envd_hash"
} | sed 's|  .*/|  |' | sha256sum | cut -d' ' -f1)
if [[ -f $out/guest.json && -f $out/vmlinuz && -f $out/vmlinux && -f $out/initrd.img && -f $out/opt-wrenn.ext4 ]] &&
  grep -q "\"inputsHash\": \"$inputs_hash\"" "$out/guest.json"; then
  touch "$out/guest.json" # for make: up to date
  echo "build-vm-guest: $out is up to date ($inputs_hash)"
  exit 0
fi

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the kernel and its modules -------------------------------------------------------------
# The uncompressed kernel inside a bzImage, as the kernel's scripts/extract-vmlinux finds it, but
# located by the boot protocol's header (Documentation/x86/boot.rst) rather than by scanning for
# a compressor's magic: the payload starts payload_offset (0x248) bytes into the protected-mode
# code, which follows the (setup_sects (0x1f1) + 1) * 512 bytes of real-mode setup, and is
# payload_length (0x24c) bytes long. Its last 4 bytes are the uncompressed size (for gzip, the
# stream's own ISIZE; every other compressor's payload has them appended: stripped before it).
extract_vmlinux() {
  local bzimage=$1 dest=$2 setup_sects payload_offset payload_length start magic size expected
  local -a decompress
  u32() { od -A n -t u4 -j "$1" -N 4 "$bzimage" | tr -d ' '; }
  [[ $(od -A n -c -j $((0x202)) -N 4 "$bzimage" | tr -d ' ') == HdrS ]] || die "$bzimage is not a bzImage (no HdrS)"
  setup_sects=$(od -A n -t u1 -j $((0x1f1)) -N 1 "$bzimage" | tr -d ' ')
  ((setup_sects)) || setup_sects=4 # the boot protocol's rule for 0
  payload_offset=$(u32 $((0x248)))
  payload_length=$(u32 $((0x24c)))
  start=$(((setup_sects + 1) * 512 + payload_offset))
  magic=$(od -A n -t x1 -j "$start" -N 4 "$bzimage" | tr -d ' \n')
  expected=$(u32 $((start + payload_length - 4)))
  case $magic in
    1f8b*) decompress=(gzip -dc) ;;
    fd377a58) decompress=(xz -dc) ;;
    28b52ffd) decompress=(zstd -qdc) ;;
    02214c18) decompress=(lz4 -dc) ;;
    5d00*) decompress=(xz --format=lzma -dc) ;;
    425a68*) decompress=(bzip2 -dc) ;;
    894c5a4f) decompress=(lzop -dc) ;;
    *) die "$bzimage: unknown kernel compression (payload magic $magic)" ;;
  esac
  command -v "${decompress[0]}" >/dev/null || die "${decompress[0]} is missing to decompress the kernel; run 'make system-deps'"
  [[ ${decompress[0]} == gzip ]] || payload_length=$((payload_length - 4))
  dd if="$bzimage" bs=1M iflag=skip_bytes,count_bytes skip="$start" count="$payload_length" status=none | "${decompress[@]}" >"$dest" || die "decompressing the kernel in $bzimage with ${decompress[*]} failed"
  size=$(stat -c %s "$dest")
  [[ $(head -c 4 "$dest" | od -A n -t x1 | tr -d ' \n') == 7f454c46 && $size == "$expected" ]] ||
    die "the kernel extracted from $bzimage is not an ELF of $expected bytes (got $size bytes)"
}

dpkg-deb -x "$kernel_deb" "$work/kernel"
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-*)
kernel_version=${vmlinuz##*/vmlinuz-}
modules_dir=$work/kernel/lib/modules/$kernel_version
[[ -d $modules_dir ]] || die "$(basename "$kernel_deb") has no lib/modules/$kernel_version"

initramfs=$work/initramfs
mkdir -p "$initramfs"/{bin,sbin,dev,proc,sys,tmp,etc,newroot,lib/modules}

# Module name -> file (names use '_', some files '-'; Debian 6.1 ships plain .ko, newer kernels .ko.xz/.zst).
declare -A module_file=()
while IFS= read -r -d '' file; do
  name=${file##*/}
  name=${name%%.ko*}
  module_file[${name//-/_}]=$file
done < <(find "$modules_dir" -name '*.ko*' -print0)

# Depth-first, dependencies first: the order insmod needs. Each module is decompressed here
# because busybox insmod reads only plain .ko.
declare -A module_added=()
load_order=()
add_module() {
  local name=$1 source dest dependency
  [[ -z ${module_added[$name]:-} ]] || return 0
  module_added[$name]=1
  source=${module_file[$name]:-}
  if [[ -z $source ]]; then
    grep -q "/${name}\.ko" "$modules_dir/modules.builtin" 2>/dev/null && return 0 # built into the kernel
    die "module $name is in neither $kernel_version's modules nor its built-ins"
  fi
  dest=$initramfs/lib/modules/$name.ko
  case $source in
    *.ko.xz) xz -dc "$source" >"$dest" ;;
    *.ko.zst) zstd -qdc "$source" >"$dest" ;;
    *.ko.gz) gzip -dc "$source" >"$dest" ;;
    *.ko) cp "$source" "$dest" ;;
    *) die "unknown module format: $source" ;;
  esac
  # modinfo's depends= (kmod is not needed on the host): a NUL-separated string in .modinfo.
  for dependency in $(tr '\0' '\n' <"$dest" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '); do
    add_module "${dependency//-/_}"
  done
  load_order+=("$name.ko")
}
for module in "${wanted_modules[@]}"; do add_module "$module"; done
printf '%s\n' "${load_order[@]}" >"$initramfs/lib/modules/load-order"

# --- the initramfs ----------------------------------------------------------------------------
cp "$busybox" "$initramfs/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$initramfs/bin/$applet"
done
# resize2fs with the libraries and loader ldd names, at the same absolute paths.
cp "$resize2fs" "$initramfs/sbin/resize2fs"
for library in $(ldd_paths "$resize2fs"); do
  mkdir -p "$initramfs$(dirname "$library")"
  cp -L "$library" "$initramfs$library"
done
# resize2fs finds where the disk is mounted through /etc/mtab.
ln -s /proc/mounts "$initramfs/etc/mtab"
install -m 0755 "$init_script" "$initramfs/init"
# The kernel's built-in initramfs has /dev/console too; creating it needs root.
[[ $(id -u) != 0 ]] || mknod -m 0600 "$initramfs/dev/console" c 5 1
# Fixed times: the same inputs give the same initrd.img.
find "$initramfs" -exec touch -h -d @0 {} +
(cd "$initramfs" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 -n >"$work/initrd.img"

# --- envd's disk ------------------------------------------------------------------------------
# Size: the content plus a quarter for per-file block rounding and metadata, plus 8 MiB. No
# journal (never written); the read-only feature makes the kernel refuse a writable mount.
envd_kb=$(du -sk --apparent-size "$envd_dir" | cut -f1)
image_mb=$((envd_kb * 5 / 4 / 1024 + 8))
mke2fs -q -F -t ext4 -b 4096 -O ^has_journal -L wrenn-envd -m 0 -E root_owner=0:0 -d "$envd_dir" "$work/opt-wrenn.ext4" "${image_mb}M" >/dev/null
tune2fs -O read-only "$work/opt-wrenn.ext4" >/dev/null

cp "$vmlinuz" "$work/vmlinuz"
extract_vmlinux "$vmlinuz" "$work/vmlinux"
cat >"$work/guest.json" <<EOF
{
  "kernelVersion": "$kernel_version",
  "vmlinux": "vmlinux",
  "kernelPackage": "$(basename "$kernel_deb" .deb)",
  "modules": [$(printf '"%s",' "${load_order[@]%.ko}" | sed 's/,$//')],
  "inputsHash": "$inputs_hash",
  "envdHash": "$envd_hash"
}
EOF
# guest.json last: its presence means the other three are complete.
for file in vmlinuz vmlinux initrd.img opt-wrenn.ext4 guest.json; do mv -f "$work/$file" "$out/$file"; done

echo "build-vm-guest: $out (kernel $kernel_version; modules ${load_order[*]%.ko})"
du -sh "$out"/vmlinuz "$out"/vmlinux "$out"/initrd.img "$out"/opt-wrenn.ext4 | sed 's/^/  /'
