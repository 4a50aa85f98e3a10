// Host agent tokens at rest: the control plane must present them to agents, so it cannot keep a
// hash; it seals each with AES-256-GCM under its secret key, bound to the host's id so a sealed
// token copied onto another host's row does not open.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { WrennError } from "../errors.js";

const ALGORITHM = "aes-256-gcm";
const VERSION = "v1";
const IV_BYTES = 12;
const TAG_BYTES = 16;
export const SECRET_KEY_BYTES = 32;

/** Throws unless `key` can seal secrets (32 bytes). */
export function checkSecretKey(key: Buffer): void {
  if (!Buffer.isBuffer(key) || key.length !== SECRET_KEY_BYTES) {
    throw new WrennError("invalid_argument", `the secret key must be ${SECRET_KEY_BYTES} bytes, got ${Buffer.isBuffer(key) ? key.length : typeof key}`);
  }
}

/** `v1:<base64url(iv | tag | ciphertext)>`, authenticated together with `context` (the host id). */
export function sealSecret(key: Buffer, plaintext: string, context: string): string {
  checkSecretKey(key);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(ALGORITHM, key, iv);
  cipher.setAAD(Buffer.from(context));
  const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  return `${VERSION}:${Buffer.concat([iv, cipher.getAuthTag(), ciphertext]).toString("base64url")}`;
}

/** The plaintext of `sealed`; internal error when it was sealed under another key or context, or altered. */
export function openSecret(key: Buffer, sealed: string, context: string): string {
  checkSecretKey(key);
  const [version, body] = sealed.split(":", 2);
  const bytes = Buffer.from(body ?? "", "base64url");
  if (version !== VERSION || bytes.length < IV_BYTES + TAG_BYTES) throw new WrennError("internal", "a stored host secret is malformed");
  const decipher = createDecipheriv(ALGORITHM, key, bytes.subarray(0, IV_BYTES));
  decipher.setAAD(Buffer.from(context));
  decipher.setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString("utf8");
  } catch (cause) {
    throw new WrennError("internal", "a stored host secret does not open with this control plane's secret key", { cause });
  }
}
