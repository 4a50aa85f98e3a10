// envd's stand-in for the line discipline's ^C / ^Z / ^\ (see src/process/terminal-signals.ts),
// checked against a real terminal on this host, whose kernel knows the true foreground group.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import pty from "@lydell/node-pty";
import {
  foregroundGroup,
  kernelSignalsTerminal,
  parseSttySave,
  readTerminalModes,
  splitAtSignals,
  type TerminalModes,
} from "../src/process/terminal-signals.js";
import { eventually } from "./helpers.js";

const modes: TerminalModes = { signals: true, canonical: true, echoControl: true, characters: { SIGINT: 3, SIGQUIT: 0x1c, SIGTSTP: 0x1a } };

/** The foreground group the kernel reports for a terminal's session leader (tpgid in /proc). */
async function kernelForeground(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, "utf8");
  return Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[5]);
}

/** Kills every process of the terminal's session (the shell and its jobs, background ones too). */
async function killSession(session: number): Promise<void> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const text = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    if (Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[3]) !== session) continue;
    try {
      process.kill(Number(entry), "SIGKILL");
    } catch {
      // already gone
    }
  }
}

describe("terminal signal characters", () => {
  test("input is split at the signal characters only while ISIG is on", () => {
    const pieces = splitAtSignals(Buffer.from("ab\x03cd\x1a"), modes);
    assert.deepEqual(
      pieces.map((p) => ("bytes" in p ? p.bytes.toString() : p.signal)),
      ["ab", "SIGINT", "cd", "SIGTSTP"],
    );
    assert.deepEqual(splitAtSignals(Buffer.from("ab\x03"), { ...modes, signals: false }).length, 1);
    assert.deepEqual(splitAtSignals(Buffer.from("\x03"), { ...modes, characters: { ...modes.characters, SIGINT: 0 } }).map((p) => "bytes" in p), [true]);
  });

  test("stty -g output of GNU coreutils and busybox parses to the modes", () => {
    const gnu = parseSttySave("500:5:bf:8a3b:3:1c:7f:15:4:0:1:0:11:13:1a:0:12:f:17:16:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0\n");
    assert.deepEqual(gnu, modes);
    const raw = parseSttySave("0:0:bf:a30:3:1c:7f:15:4:0:1:0:11:13:1a:0:12:f:17:16:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0");
    assert.equal(raw?.signals, false);
    assert.equal(raw?.canonical, false);
    assert.equal(parseSttySave("not stty"), undefined);
  });

  test("on a real terminal: its modes are read, the kernel's own signalling is seen, and the inferred foreground group is the kernel's", async () => {
    const terminal = pty.spawn("/bin/bash", ["--norc", "--noprofile", "-i"], { name: "xterm", cols: 80, rows: 24, cwd: "/tmp", env: { PS1: "$ ", PATH: process.env.PATH ?? "/usr/bin:/bin" }, encoding: null });
    let screen = "";
    terminal.onData((d) => void (screen += Buffer.from(d).toString()));
    try {
      await eventually(() => screen.includes("$ ") || undefined, "the prompt");
      const fd = (terminal as unknown as { fd: number }).fd;
      const atPrompt = await readTerminalModes(fd);
      assert.ok(atPrompt, "stty read the terminal");
      assert.equal(atPrompt.signals, true);
      assert.equal(atPrompt.characters.SIGINT, 3);
      assert.equal(await kernelSignalsTerminal(terminal.pid), true, "Linux reports the foreground group, so envd leaves ^C to it");
      assert.equal(await foregroundGroup(terminal.pid, atPrompt), terminal.pid, "at the prompt, the shell");

      terminal.write("sleep 100 & sleep 50\n");
      const running = await eventually(async () => {
        const fg = await kernelForeground(terminal.pid);
        return fg !== terminal.pid && fg > 0 ? fg : undefined;
      }, "sleep 50 to hold the terminal");
      const whileRunning = await readTerminalModes(fd);
      assert.equal(whileRunning?.canonical, true, "the shell restores canonical mode for a foreground job");
      assert.equal(await foregroundGroup(terminal.pid, whileRunning), running, "the newest job, not the one in the background");
    } finally {
      await killSession(terminal.pid);
    }
  });
});
