// wrenn completion bash: a completion script for bash (`source <(wrenn completion bash)`).
import { parse, usageError } from "../command-line/args.js";

const USAGE = "wrenn completion bash";

export function completionScript(tree: Record<string, string[]>): string {
  const top = Object.keys(tree).join(" ");
  const cases = Object.entries(tree)
    .filter(([, subcommands]) => subcommands.length > 0)
    .map(([command, subcommands]) => `      ${command}) COMPREPLY=($(compgen -W "${subcommands.join(" ")}" -- "$cur")); return ;;`)
    .join("\n");
  return `# bash completion for wrenn: source <(wrenn completion bash)
_wrenn() {
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${top}" -- "$cur")); return
  fi
  if [ "$COMP_CWORD" -eq 2 ]; then
    case "\${COMP_WORDS[1]}" in
${cases}
    esac
  fi
  COMPREPLY=($(compgen -f -- "$cur"))
}
complete -F _wrenn wrenn
`;
}

export function completion(argv: string[], tree: Record<string, string[]>): void {
  const { positionals } = parse(argv, {}, USAGE, { min: 1, max: 1 });
  if (positionals[0] !== "bash") throw usageError(`no completion for "${positionals[0]}" (bash only)`, USAGE);
  process.stdout.write(completionScript(tree));
}
