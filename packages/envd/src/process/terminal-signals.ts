// Ctrl-C, Ctrl-Z and Ctrl-\ typed into a terminal, for kernels whose line discipline does not turn
// them into signals. gVisor (runsc 2022-12 and older) does not: it queues the byte as input, so a
// running `sleep` never hears the ^C. There envd plays the line discipline's part: when the
// terminal's ISIG flag is on and a byte is its VINTR, VSUSP or VQUIT character, envd sends the
// signal to the terminal's foreground process group and drops the byte, as Linux does.
//
// Nobody outside the terminal's session may ask for its foreground group (TIOCGPGRP needs the
// caller's controlling terminal), so envd infers it from /proc; see `foregroundGroup`.
import { spawn, type ChildProcess } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";

/** The default signal characters; input without any of them never needs a look at the terminal. */
const DEFAULT_SIGNAL_BYTES = new Set([0x03, 0x1a, 0x1c]);
/** termios c_lflag bits and c_cc indexes (Linux, all architectures envd runs on). */
const ISIG = 0x1;
const ICANON = 0x2;
const ECHO = 0x8;
const ECHOCTL = 0x200;
const VINTR = 0;
const VQUIT = 1;
const VSUSP = 10;
const STTY_TIMEOUT_MS = 2000;

export interface TerminalModes {
  signals: boolean;
  canonical: boolean;
  echoControl: boolean;
  /** The byte each signal character is (0 = disabled). */
  characters: { SIGINT: number; SIGQUIT: number; SIGTSTP: number };
}

export type TerminalSignal = keyof TerminalModes["characters"];

/** One piece of typed input: bytes for the terminal, or a signal for its foreground group. */
export type InputPiece = { bytes: Buffer } | { signal: TerminalSignal; character: number };

/** Whether `data` may hold a signal character (with the default characters: Linux's and everyone's). */
export function mayHoldSignalCharacter(data: Uint8Array): boolean {
  for (const byte of data) if (DEFAULT_SIGNAL_BYTES.has(byte)) return true;
  return false;
}

/** Splits typed input at the terminal's signal characters, when its ISIG flag is on. */
export function splitAtSignals(data: Buffer, modes: TerminalModes): InputPiece[] {
  if (!modes.signals) return [{ bytes: data }];
  const bySignal = new Map<number, TerminalSignal>();
  for (const [signal, character] of Object.entries(modes.characters) as [TerminalSignal, number][]) {
    if (character !== 0 && !bySignal.has(character)) bySignal.set(character, signal);
  }
  const pieces: InputPiece[] = [];
  let start = 0;
  for (let i = 0; i < data.length; i++) {
    const signal = bySignal.get(data[i]!);
    if (!signal) continue;
    if (i > start) pieces.push({ bytes: data.subarray(start, i) });
    pieces.push({ signal, character: data[i]! });
    start = i + 1;
  }
  if (start < data.length) pieces.push({ bytes: data.subarray(start) });
  return pieces;
}

/**
 * The terminal's modes, read by `stty -g` with the terminal's master as its stdin (TCGETS on the
 * master reports the terminal's settings). Node has no tcgetattr; every rootfs has an stty
 * (coreutils or busybox). Undefined when there is none or it fails.
 */
export async function readTerminalModes(masterFd: number): Promise<TerminalModes | undefined> {
  const out = await new Promise<string | undefined>((resolve) => {
    let text = "";
    let child: ChildProcess;
    try {
      child = spawn("stty", ["-g"], { stdio: [masterFd, "pipe", "ignore"], timeout: STTY_TIMEOUT_MS });
    } catch {
      resolve(undefined);
      return;
    }
    child.on("error", () => resolve(undefined));
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => (text += chunk));
    child.on("close", (code) => resolve(code === 0 ? text : undefined));
  });
  return out === undefined ? undefined : parseSttySave(out);
}

/** Parses `stty -g` output (`iflag:oflag:cflag:lflag:cc0:cc1:...`, hexadecimal; GNU and busybox alike). */
export function parseSttySave(text: string): TerminalModes | undefined {
  const fields = text.trim().split(":").map((field) => Number.parseInt(field, 16));
  if (fields.length < 4 + VSUSP + 1 || fields.some((field) => Number.isNaN(field))) return undefined;
  const lflag = fields[3]!;
  const cc = fields.slice(4);
  return {
    signals: (lflag & ISIG) !== 0,
    canonical: (lflag & ICANON) !== 0,
    echoControl: (lflag & ECHO) !== 0 && (lflag & ECHOCTL) !== 0,
    characters: { SIGINT: cc[VINTR]!, SIGQUIT: cc[VQUIT]!, SIGTSTP: cc[VSUSP]! },
  };
}

interface ProcStat {
  pid: number;
  state: string;
  pgrp: number;
  session: number;
  tpgid: number;
  startTime: number;
}

async function readStat(pid: number | string): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // comm may hold spaces and parentheses: the fields start after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return {
    pid: Number(pid),
    state: fields[0]!,
    pgrp: Number(fields[2]),
    session: Number(fields[3]),
    tpgid: Number(fields[5]),
    startTime: Number(fields[19]),
  };
}

/**
 * Whether the kernel tracks the terminal's foreground group itself (it reports it as tpgid, and
 * then its line discipline also signals it): true on Linux, false on gVisor, whose /proc says 0.
 */
export async function kernelSignalsTerminal(sessionLeader: number): Promise<boolean | undefined> {
  const stat = await readStat(sessionLeader);
  return stat === undefined ? undefined : stat.tpgid > 0;
}

/**
 * The process group the kernel would signal: the terminal's foreground group. Without the kernel's
 * word, it is inferred from the session's process groups (the shell that leads the session puts
 * each job into its own group):
 * - no job runs (none, or all stopped): the shell's own group;
 * - jobs run and the terminal is in canonical mode: the newest job. A shell editing its command
 *   line (readline, ash, zsh) turns canonical mode off and restores it for a foreground job;
 * - jobs run and canonical mode is off: either the shell is at its prompt with jobs in the
 *   background, or a full-screen program runs; the shell's group, so that a background job is
 *   never interrupted by a key typed at the prompt.
 */
export async function foregroundGroup(sessionLeader: number, modes: TerminalModes | undefined): Promise<number> {
  const canonical = modes?.canonical ?? true;
  if (!canonical) return sessionLeader;
  const groups = new Map<number, number>(); // running job group -> its oldest member's start time
  for (const entry of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readStat(entry);
    if (!stat || stat.session !== sessionLeader || stat.pgrp === sessionLeader) continue;
    if (/^[TtZX]/.test(stat.state)) continue;
    groups.set(stat.pgrp, Math.min(groups.get(stat.pgrp) ?? Infinity, stat.startTime));
  }
  let newest: number | undefined;
  let newestStart = -Infinity;
  for (const [group, start] of groups) {
    if (start > newestStart || (start === newestStart && group > (newest ?? 0))) {
      newest = group;
      newestStart = start;
    }
  }
  return newest ?? sessionLeader;
}

/** How a terminal echoes a signal character with ECHOCTL on: ^C, ^Z, ^\. */
export function echoOfControl(character: number): string {
  return "^" + String.fromCharCode(character ^ 0x40);
}
