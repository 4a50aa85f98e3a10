// Database errors the layers above act on, recognised by SQLSTATE whichever driver raised them
// (drizzle wraps the driver's error in `cause`).

/** Whether `err`, or an error it wraps, is a unique violation (SQLSTATE 23505). */
export function isUniqueViolation(err: unknown): boolean {
  for (let cause = err, depth = 0; typeof cause === "object" && cause !== null && depth < 5; depth++) {
    if ((cause as { code?: unknown }).code === "23505") return true;
    cause = (cause as { cause?: unknown }).cause;
  }
  return false;
}
