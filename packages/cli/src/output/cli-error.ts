// An error the CLI reports as one line and an exit code, with no stack: the message says what to do.
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }
}
