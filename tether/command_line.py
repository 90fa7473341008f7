"""The front door every Tether command line shares (``tether`` in tether_app, ``tether-robot`` here):
argparse errors as one ``error:`` line with exit 2, every default in ``--help``, and the exit status of
tether.errors for what a command raises. Torch-free."""

from __future__ import annotations

import argparse
import sys

from tether.errors import EXIT_INTERRUPTED, EXIT_USAGE, CommandFailed, UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the front door's error shape: one ``error:`` line naming the fix, exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default and keeps hand-wrapped descriptions as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        # identity, not ==: a default of 0 equals False, and 0 is a value to show
        if "default" in text or action.default == [] or any(action.default is d for d in (None, False, argparse.SUPPRESS)):
            return text  # said in the help already, or nothing to show
        return super()._get_help_string(action)


def defaults_in_help(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                defaults_in_help(sub)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command's ``func``; its status follows tether.errors (0 ok,
    1 failed, 2 user error, 3 acceptance failed, 130 interrupted)."""
    defaults_in_help(parser)
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except (UserError, CommandFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return rc if isinstance(rc, int) else 0
