// Which /30 of the sandbox address pool each sandbox uses: slot n is the pool's n-th /30, its
// first usable address on the host's veth end and its second on the sandbox's `eth0`.
import ipaddr from "ipaddr.js";
import { HostCapacityError } from "../errors.js";

/** Where sandbox addresses come from unless the agent is configured otherwise. */
export const DEFAULT_POOL_CIDR = "10.200.0.0/16";
const SLOT_PREFIX_LENGTH = 30;
const ADDRESSES_PER_SLOT = 2 ** (32 - SLOT_PREFIX_LENGTH);

/** Every slot of the pool is in use: the host can take no more sandboxes until one goes. */
export class SlotsExhaustedError extends HostCapacityError {
  constructor(poolCidr: string, total: number) {
    super(`all ${total} network slots of the sandbox pool ${poolCidr} are in use`);
    this.name = "SlotsExhaustedError";
  }
}

export interface SlotAddresses {
  /** The /30's network address. */
  network: string;
  /** The veth end in the root namespace: the sandbox's gateway. */
  hostAddress: string;
  /** The veth end inside the sandbox's namespace. */
  sandboxAddress: string;
  prefixLength: 30;
}

export class SlotAllocator {
  /** The pool in canonical form, e.g. "10.200.0.0/16". */
  readonly cidr: string;
  /** How many slots the pool holds. */
  readonly total: number;
  private readonly base: number;
  private readonly prefixLength: number;
  private readonly taken = new Set<number>();

  constructor(poolCidr: string = DEFAULT_POOL_CIDR) {
    // The four-part check refuses shorthand such as "10.200/16" that inet_aton would accept.
    if (!ipaddr.IPv4.isValidCIDRFourPartDecimal(poolCidr)) {
      throw new RangeError(`sandbox pool ${JSON.stringify(poolCidr)} is not an IPv4 CIDR such as ${DEFAULT_POOL_CIDR}`);
    }
    const [address, prefixLength] = ipaddr.IPv4.parseCIDR(poolCidr);
    if (prefixLength > SLOT_PREFIX_LENGTH) {
      throw new RangeError(`sandbox pool ${poolCidr} is smaller than one /${SLOT_PREFIX_LENGTH} slot`);
    }
    const network = ipaddr.IPv4.networkAddressFromCIDR(poolCidr).toString();
    if (network !== address.toString()) {
      // A pool given by a host address is most likely a typo; guessing which range was meant is not ours to do.
      throw new RangeError(`sandbox pool ${poolCidr} has host bits set; did you mean ${network}/${prefixLength}?`);
    }
    this.cidr = `${network}/${prefixLength}`;
    this.prefixLength = prefixLength;
    this.base = toNumber(address);
    this.total = 2 ** (SLOT_PREFIX_LENGTH - prefixLength);
  }

  /** How many slots are allocated or reserved. */
  get used(): number {
    return this.taken.size;
  }

  /** Takes the lowest free slot; throws SlotsExhaustedError when there is none. */
  allocate(): number {
    for (let slot = 0; slot < this.total; slot++) {
      if (!this.taken.has(slot)) {
        this.taken.add(slot);
        return slot;
      }
    }
    throw new SlotsExhaustedError(this.cidr, this.total);
  }

  /** Takes a given slot, as when a restarted agent finds a sandbox still running in it. */
  reserve(slot: number): void {
    this.checkRange(slot);
    if (this.taken.has(slot)) throw new RangeError(`network slot ${slot} of ${this.cidr} is already taken`);
    this.taken.add(slot);
  }

  /** Gives a slot back; releasing a free slot does nothing. */
  release(slot: number): void {
    this.taken.delete(slot);
  }

  /** Whether `slot` is allocated or reserved. */
  isTaken(slot: number): boolean {
    return this.taken.has(slot);
  }

  /** The addresses of `slot`, whether taken or not. */
  addresses(slot: number): SlotAddresses {
    this.checkRange(slot);
    const network = this.base + slot * ADDRESSES_PER_SLOT;
    return {
      network: toAddress(network),
      hostAddress: toAddress(network + 1),
      sandboxAddress: toAddress(network + 2),
      prefixLength: SLOT_PREFIX_LENGTH,
    };
  }

  /** The slot whose /30 holds `address`, or undefined when the pool does not hold it. */
  slotOf(address: string): number | undefined {
    if (!this.contains(address)) return undefined;
    return Math.floor((toNumber(ipaddr.IPv4.parse(address)) - this.base) / ADDRESSES_PER_SLOT);
  }

  /** Whether `address` (an IPv4 address) lies inside the pool. */
  contains(address: string): boolean {
    if (!ipaddr.IPv4.isValidFourPartDecimal(address)) return false;
    return ipaddr.IPv4.parse(address).match(ipaddr.IPv4.parse(toAddress(this.base)), this.prefixLength);
  }

  private checkRange(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.total) {
      throw new RangeError(`network slot ${slot} is outside 0–${this.total - 1} of ${this.cidr}`);
    }
  }
}

function toNumber(address: ipaddr.IPv4): number {
  // Arithmetic rather than bit shifts: shifts would turn addresses above 127.255.255.255 negative.
  return address.octets.reduce((sum, octet) => sum * 256 + octet, 0);
}

function toAddress(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join(".");
}
