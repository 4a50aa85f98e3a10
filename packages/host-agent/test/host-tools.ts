// Whether a program the tests need runs on this machine (tests skip with a reason when not).
import { execFileSync } from "node:child_process";

export function commandRuns(file: string, args: string[] = ["--version"]): boolean {
  try {
    execFileSync(file, args, { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
