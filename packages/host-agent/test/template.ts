// A tiny template for tests: Debian's static busybox with every applet linked, a root and a
// `user` account (uid 1000) with a home. Built in milliseconds, never checked in.
import { chown, copyFile, mkdir, writeFile, symlink } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "../src/exec/command.js";

export const BUSYBOX = "/bin/busybox"; // Debian's busybox-static: needs no libc

export async function buildBusyboxTemplate(dir: string): Promise<void> {
  for (const sub of ["bin", "etc", "root", "home/user", "tmp", "proc", "dev", "sys", "opt/wrenn"]) {
    await mkdir(path.join(dir, sub), { recursive: true });
  }
  await copyFile(BUSYBOX, path.join(dir, "bin", "busybox"));
  const applets = (await runCommand(BUSYBOX, ["--list"], { timeoutMs: 5000 })).split("\n").filter((a) => a && a !== "busybox");
  for (const applet of applets) await symlink("busybox", path.join(dir, "bin", applet));
  await writeFile(path.join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n");
  await writeFile(path.join(dir, "etc", "group"), "root:x:0:\nuser:x:1000:\n");
  await chown(path.join(dir, "home", "user"), 1000, 1000);
}

export const BASH_STATIC = "/bin/bash-static"; // Debian's bash-static: needs no libc

/**
 * The busybox template with a real bash (Debian's bash-static) as /bin/bash: the e2b SDK starts
 * every command as `/bin/bash -l -c` and its terminal as `/bin/bash -i -l`.
 */
export async function buildBashTemplate(dir: string): Promise<void> {
  await buildBusyboxTemplate(dir);
  await copyFile(BASH_STATIC, path.join(dir, "bin", "bash"));
}
