// The guest side of the qemu runtime: what scripts/build-vm-guest.sh builds into build/vm/ and
// the kernel command line its /init (scripts/vm-guest/init) reads. Every guest has the same
// address and MAC; the host translates them per sandbox, so a memory snapshot restores anywhere.
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { validateDnsServers } from "../network/dns.js";

export const GUEST_ADDRESS = "169.254.0.21";
/** The host's end of the TAP link (inside the sandbox's netns): the guest's default route. */
export const GUEST_GATEWAY = "169.254.0.22";
export const GUEST_PREFIX = 30;
/** Locally administered (02:), "wrn" in ASCII. */
export const GUEST_MAC = "02:77:72:6e:00:01";

/**
 * What else a VM needs besides its disks and NIC: a virtio-rng device seeds the guest kernel's
 * RNG (envd's Node blocks in getrandom() until it is; under TCG that costs ~1.5 s of boot).
 */
export const GUEST_DEVICE_ARGS: readonly string[] = Object.freeze(["-device", "virtio-rng-device"]);

export interface GuestArtifacts {
  /** build/vm/vmlinuz: qemu's -kernel. */
  kernel: string;
  /**
   * build/vm/vmlinux: the same kernel uncompressed, an ELF, which is what Firecracker loads on
   * x86_64 (it takes no bzImage). Absent from a build made before it was added.
   */
  vmlinux?: string;
  /** build/vm/initrd.img: qemu's -initrd. */
  initrd: string;
  /** build/vm/opt-wrenn.ext4: the second virtio-blk disk (/dev/vdb), attached read-only. */
  envdImage: string;
  /** The guest kernel's release, e.g. 6.1.0-56-cloud-amd64. */
  kernelVersion: string;
  /** Hash of everything the four files were built from: the guest's version. */
  inputsHash: string;
  /** Hash of build/opt-wrenn as baked into envdImage. */
  envdHash: string;
}

const GUEST_FILES = { kernel: "vmlinuz", initrd: "initrd.img", envdImage: "opt-wrenn.ext4" } as const;

/** Reads `vmDir`/guest.json (written last by the build) and checks the files it describes. */
export async function guestArtifacts(vmDir: string): Promise<GuestArtifacts> {
  const manifestPath = path.join(vmDir, "guest.json");
  let manifest: unknown;
  try {
    manifest = JSON.parse(await readFile(manifestPath, "utf8"));
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === "ENOENT" ? "is missing" : `is unreadable (${(err as Error).message})`;
    throw new Error(`the VM guest ${manifestPath} ${reason}: run 'make vm-guest'`);
  }
  const { kernelVersion, inputsHash, envdHash, vmlinux } = (manifest ?? {}) as Record<string, unknown>;
  if (typeof kernelVersion !== "string" || typeof inputsHash !== "string" || typeof envdHash !== "string") {
    throw new Error(`${manifestPath} lacks kernelVersion, inputsHash or envdHash: run 'make vm-guest'`);
  }
  const files = {
    kernel: path.join(vmDir, GUEST_FILES.kernel),
    initrd: path.join(vmDir, GUEST_FILES.initrd),
    envdImage: path.join(vmDir, GUEST_FILES.envdImage),
  };
  const uncompressed = typeof vmlinux === "string" ? { vmlinux: path.join(vmDir, path.basename(vmlinux)) } : {};
  for (const file of [...Object.values(files), ...Object.values(uncompressed)]) {
    if (!(await stat(file).catch(() => undefined))?.isFile()) throw new Error(`the VM guest file ${file} is missing: run 'make vm-guest'`);
  }
  return { ...files, ...uncompressed, kernelVersion, inputsHash, envdHash };
}

// The kernel's sethostname() limit (__NEW_UTS_LEN); sandbox ids (A-Z a-z 0-9 _ -) fit.
const HOSTNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
// What the manager's boot tokens are made of (hex), with room for base64url.
const BOOT_TOKEN = /^[A-Za-z0-9_-]{1,256}$/;
// x86's COMMAND_LINE_SIZE: a longer line is cut off silently.
const MAX_COMMAND_LINE = 2048;

/**
 * The guest kernel's whole command line. The tsc/lpj options skip calibrations that hang or crawl
 * under TCG; `quiet` keeps kernel chatter out of the console log (init's and envd's lines stay).
 * Throws RangeError for a value that could break the line (spaces, quotes) or the guest's files.
 */
export function kernelCommandLine(options: { hostname: string; dnsServers: string[]; envdBootToken?: string }): string {
  if (!HOSTNAME.test(options.hostname)) {
    throw new RangeError(`hostname ${JSON.stringify(options.hostname)} is not 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit`);
  }
  const dnsServers = validateDnsServers(options.dnsServers);
  if (options.envdBootToken !== undefined && !BOOT_TOKEN.test(options.envdBootToken)) {
    throw new RangeError("the envd boot token must be 1-256 letters, digits, '_' or '-'");
  }
  const line = [
    "console=ttyS0",
    "reboot=k",
    "panic=-1",
    "tsc_early_khz=2000000",
    "lpj=4000000",
    "tsc=reliable",
    "no_timer_check",
    "quiet",
    "rdinit=/init",
    `wrenn.ip=${GUEST_ADDRESS}/${GUEST_PREFIX}`,
    `wrenn.gw=${GUEST_GATEWAY}`,
    `wrenn.hostname=${options.hostname}`,
    `wrenn.dns=${dnsServers.join(",")}`,
    ...(options.envdBootToken !== undefined ? [`wrenn.token=${options.envdBootToken}`] : []),
  ].join(" ");
  if (line.length >= MAX_COMMAND_LINE) throw new RangeError(`the kernel command line is ${line.length} bytes; the kernel keeps ${MAX_COMMAND_LINE - 1}`);
  return line;
}
