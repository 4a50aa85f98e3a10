// Secrets handed out once (API keys, host tokens) and stored only as their sha256.
import { createHash, randomInt } from "node:crypto";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const SECRET_LENGTH = 40;

/** `prefix` + 40 random letters and digits (≈238 bits), from the OS's CSPRNG. */
export function newSecret(prefix: string): string {
  let secret = prefix;
  for (let i = 0; i < SECRET_LENGTH; i++) secret += ALPHABET[randomInt(ALPHABET.length)];
  return secret;
}

/** Hex sha256: the secrets are random, so a plain hash is enough to look them up by. */
export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}
