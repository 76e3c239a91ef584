"""``python -m sparse_ticket_mlflow``: the command line, then a quick exit.

Tearing down an interpreter that has loaded torch and MLflow takes 1 to 3 s (module
finalisers, the collection of millions of objects), and a study's driver waits for every node's
process to exit before it starts the next one. Once the command is done, this does what a normal
exit does that matters (threading's exit hooks and the join of non-daemon threads, the
``atexit`` handlers, flushing stdout and stderr) and leaves with :func:`os._exit`. An exception
that is not ``SystemExit`` takes the normal path (its traceback, then the normal teardown).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from sparse_ticket_mlflow.cli import main


def exit_code(error: SystemExit) -> int:
    """The status a normal exit would return for ``sys.exit(error.code)``."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    print(error.code, file=sys.stderr)  # sys.exit("message"): the message, status 1
    return 1


def run() -> None:
    try:
        main()
        code = 0
    except SystemExit as error:
        code = exit_code(error)
    # What the interpreter does first at exit: run threading's exit hooks (they stop
    # ThreadPoolExecutor workers, e.g. MLflow's artifact uploads) and join non-daemon threads.
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


run()
