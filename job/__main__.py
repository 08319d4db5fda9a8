"""The process around the command: ``huggingtweets`` and ``python -m job`` start here.

It restarts itself under torchrun when there are several GPUs or nodes, turns what ends the
command into the exit code the platforms read (docs/exit-codes.md), and skips the
interpreter's teardown.
"""

from __future__ import annotations

import logging
import signal
import sys

from job import errors, temporary


def main() -> None:
    import atexit

    from job.training.launch import relaunch_if_needed

    exit_code = [1]  # until the command says otherwise (an uncaught exception is 1)
    # Registered first, so it runs after every other exit handler (W&B's, torch's).
    atexit.register(_exit_without_teardown, exit_code)
    # SIGTERM outside training (which checkpoints on it: training/checkpoints.py) and SIGINT
    # end the command through its error boundary: one line, its code, a failed status.
    signal.signal(signal.SIGTERM, _stopping)
    signal.signal(signal.SIGINT, _stopping)
    try:
        relaunch_if_needed(sys.argv[1:])  # several GPUs or nodes: restart under torchrun
        temporary.start()  # TMPDIR: a folder of this process's, removed however it ends
        from job import cli

        cli.app()  # looked up now: a test may wrap it
    except SystemExit as e:  # how Typer ends every command
        exit_code[0] = e.code if isinstance(e.code, int) else int(e.code is not None)
        raise
    except (errors.JobError, KeyboardInterrupt, errors.Terminated) as e:  # outside a command
        error = errors.classify(e)
        errors.say(error)
        exit_code[0] = error.exit_code
        sys.exit(error.exit_code)
    finally:
        if _STOPPED:
            # SIGTERM, and the command's boundary has said its line and written its status:
            # nothing is left to wait for. A thread stuck in a stalled upload (boto3's
            # transfer workers, which the interpreter joins at exit) would otherwise hold the
            # exit until the fallback below, past what the platform's grace allows for.
            _exit_without_teardown(exit_code)
        # The command is over; the interpreter now joins every worker thread before the exit
        # handlers run, and one stuck in a read (a download's, a server's that drips) would
        # hold the exit code back for as long as the read lasts.
        _exit_within(EXIT_GRACE_SECONDS, exit_code)


def _exit_within(seconds: float, exit_code: list[int], line: errors.JobError | None = None) -> None:
    """End the process with ``exit_code[0]`` in ``seconds``, whatever still runs then; say
    ``line`` first, unless the command's boundary said its own."""
    import threading

    def end() -> None:
        if line is not None:
            errors.say(line)
        _exit_now(exit_code[0])

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()


# After SIGTERM, the seconds the command has to end by itself: its boundary writes the line
# and the status. A thread stuck in a read (a download's worker) can hold the interpreter's
# exit, which joins such threads, for as long as the read lasts; this bounds it. Well inside
# the platforms' grace (AWS Batch and Kubernetes: 30 s by default).
EXIT_GRACE_SECONDS = 15.0


_STOPPED: list[int] = []  # the signal that ends the command, once it has come


def _stopping(signum: int, frame: object) -> None:
    """SIGTERM (the platform's stop) or SIGINT (Ctrl-C): raised in the main thread as the
    command's boundary knows them, and bounded: the process ends within the grace whatever
    holds it (Python's own SIGINT was not: a Ctrl-C once left a job waiting on a stalled
    download for more than 80 s), and at once on a second one."""
    _STOPPED.append(signum)
    interrupt = signum == signal.SIGINT
    stop: BaseException = KeyboardInterrupt() if interrupt else errors.Terminated()
    stuck = errors.stopped(stop, "the process did not end by itself")
    _exit_within(EXIT_GRACE_SECONDS, [stuck.exit_code], stuck)
    signal.signal(signum, lambda s, f: _exit_now(stuck.exit_code))  # a second: now
    raise stop


def _exit_now(code: int) -> None:
    """End the process with ``code`` at once, its temporary folder removed first: every exit
    here skips the interpreter's own cleanup (a few files, however large: unlinked at once)."""
    import os

    temporary.end()
    os._exit(code)


def _exit_without_teardown(exit_code: list[int]) -> None:
    """End the process once every exit handler has run, skipping the interpreter's teardown.

    Freeing torch's and transformers' thousands of modules and objects one by one takes
    ~1.1 s on the CPU dev machine (docs/benchmarks.md) and does nothing for a finished job:
    every output file is already closed, W&B runs are finished, the OS frees the rest.
    """
    logging.shutdown()  # its own exit handler was registered before this one: flush here
    sys.stdout.flush()
    sys.stderr.flush()
    _exit_now(exit_code[0])


if __name__ == "__main__":
    main()
