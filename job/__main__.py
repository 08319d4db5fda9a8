"""The process around the command: ``huggingtweets`` and ``python -m job`` start here.

It restarts itself under torchrun when there are several GPUs or nodes, turns what ends the
command into the exit code the platforms read (docs/exit-codes.md), and skips the
interpreter's teardown.
"""

from __future__ import annotations

import logging
import signal
import sys

from job import errors


def main() -> None:
    import atexit

    from job.training.launch import relaunch_if_needed

    exit_code = [1]  # until the command says otherwise (an uncaught exception is 1)
    # Registered first, so it runs after every other exit handler (W&B's, torch's).
    atexit.register(_exit_without_teardown, exit_code)
    # SIGTERM outside training (which checkpoints on it: training/checkpoints.py) ends the
    # command through its error boundary: one line, the transient code, a failed status.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        relaunch_if_needed(sys.argv[1:])  # several GPUs or nodes: restart under torchrun
        from job import cli

        cli.app()  # looked up now: a test may wrap it
    except errors.JobError as e:  # raised outside a command's own handler
        errors.say(e)
        exit_code[0] = e.exit_code
        sys.exit(e.exit_code)
    except SystemExit as e:  # how Typer ends every command
        exit_code[0] = e.code if isinstance(e.code, int) else int(e.code is not None)
        raise
    except (KeyboardInterrupt, errors.Terminated) as e:  # before a command's boundary
        stop = errors.stopped(e)
        errors.say(stop)
        exit_code[0] = stop.exit_code
        sys.exit(stop.exit_code)
    finally:
        # The command is over; the interpreter now joins every worker thread before the exit
        # handlers run, and one stuck in a read (a download's, a server's that drips) would
        # hold the exit code back for as long as the read lasts.
        _exit_within(EXIT_GRACE_SECONDS, exit_code)


def _exit_within(seconds: float, exit_code: list[int]) -> None:
    import os
    import threading

    timer = threading.Timer(seconds, lambda: os._exit(exit_code[0]))
    timer.daemon = True
    timer.start()


# After SIGTERM, the seconds the command has to end by itself: its boundary writes the line
# and the status. A thread stuck in a read (a download's worker) can hold the interpreter's
# exit, which joins such threads, for as long as the read lasts; this bounds it. Well inside
# the platforms' grace (AWS Batch and Kubernetes: 30 s by default).
EXIT_GRACE_SECONDS = 15.0


def _terminated(signum: int, frame: object) -> None:
    import os
    import threading

    def force() -> None:  # its line, unless the command's boundary said it already
        errors.say(errors.TransientError("stopped by SIGTERM; the process did not end by itself"))
        os._exit(errors.TRANSIENT)

    timer = threading.Timer(EXIT_GRACE_SECONDS, force)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, lambda s, f: os._exit(errors.TRANSIENT))  # a second: now
    raise errors.Terminated()


def _exit_without_teardown(exit_code: list[int]) -> None:
    """End the process once every exit handler has run, skipping the interpreter's teardown.

    Freeing torch's and transformers' thousands of modules and objects one by one takes
    ~1.1 s on the CPU dev machine (docs/benchmarks.md) and does nothing for a finished job:
    every output file is already closed, W&B runs are finished, the OS frees the rest.
    """
    import os

    logging.shutdown()  # its own exit handler was registered before this one: flush here
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code[0])


if __name__ == "__main__":
    main()
