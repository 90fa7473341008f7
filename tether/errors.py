"""Exit status of every ``tether`` command, and the one exception a user error raises.

| status | meaning |
|---|---|
| 0 | done; any acceptance the command prints passed |
| 1 | the command ran and failed (a node died or exited early, a solver diverged, a robot crashed) |
| 2 | user error: a bad argument, file or config value, a refused overwrite; nothing was done |
| 3 | the command ran to the end but the acceptance it prints failed (``eval``, ``demo``) |
| 130 | interrupted (Ctrl-C) |

A user error is one line on stderr, ``error: <what is wrong>; <what to do>``, never a traceback.
Torch-free: the robot side imports it too.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ACCEPTANCE = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake in what the user gave (argument, file, config value, existing output). The message is
    one line naming the problem and the fix; ``tether``'s main prints it as ``error: ...`` and exits 2."""

    exit_code = EXIT_USAGE


class CommandFailed(Exception):
    """The command ran and failed for a reason that is not the user's input (exit 1, one line)."""

    exit_code = EXIT_FAILURE
