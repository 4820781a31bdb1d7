"""Command-line handling for the bench scripts that read ``sys.argv`` by hand."""
import sys


def script_args(doc: str, flags: tuple[str, ...] = ()) -> list[str]:
    """``sys.argv[1:]`` once ``-h``/``--help`` (prints ``doc``, exit 0) and options the
    script does not know (one line, exit 2) are dealt with, so that neither is taken for a
    weights file. ``flags``: the options the script reads itself."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(doc.strip())
        sys.exit(0)
    unknown = [a for a in args if a.startswith("-") and a not in flags]
    if unknown:
        known = ", ".join(flags) if flags else "none"
        print(f"error: unknown option {unknown[0]} (options: {known}; see --help)", file=sys.stderr)
        sys.exit(2)
    return args
