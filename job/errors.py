"""Errors a user can act on, each with its own exit code.

The job runs unattended (AWS Batch, Kubernetes), so the exit code is the interface: the platform
retries on ``TRANSIENT`` and gives up at once on the bad-input codes (see infra/). Keep the
numbers stable; they are documented in the README.
"""

from __future__ import annotations

# Exit codes. 1 is an unexpected bug, 2 is a usage error (Typer/Click's own).
INTERNAL = 1
USAGE = 2
INVALID_HANDLE = 3
INPUT_NOT_FOUND = 4
CORRUPT_INPUT = 5
ACCOUNT_NOT_FOUND = 6
ACCOUNT_PROTECTED = 7
NOT_ENOUGH_DATA = 8
CREDENTIALS = 9
BAD_CONFIG = 10
NOT_WRITABLE = 11
OPTED_OUT = 12
TRANSIENT = 75  # EX_TEMPFAIL from sysexits.h: "try again later"

# Codes that mean "the input is wrong": retrying the same job cannot help.
BAD_INPUT_CODES = (
    INVALID_HANDLE,
    INPUT_NOT_FOUND,
    CORRUPT_INPUT,
    ACCOUNT_NOT_FOUND,
    ACCOUNT_PROTECTED,
    NOT_ENOUGH_DATA,
    CREDENTIALS,
    BAD_CONFIG,
    NOT_WRITABLE,
    OPTED_OUT,
)


class JobError(Exception):
    """An error with a one-line message for the user and an exit code for the platform."""

    exit_code = INTERNAL

    def __init__(self, message: str) -> None:
        # One line, always: logs on Batch/K8s are read line by line.
        super().__init__(" ".join(message.split()))


class InvalidHandle(JobError):
    exit_code = INVALID_HANDLE


class InputNotFound(JobError):
    exit_code = INPUT_NOT_FOUND


class CorruptInput(JobError):
    exit_code = CORRUPT_INPUT


class AccountNotFound(JobError):
    exit_code = ACCOUNT_NOT_FOUND


class AccountProtected(JobError):
    exit_code = ACCOUNT_PROTECTED


class NotEnoughData(JobError):
    exit_code = NOT_ENOUGH_DATA


class CredentialsError(JobError):
    exit_code = CREDENTIALS


class BadConfig(JobError):
    exit_code = BAD_CONFIG


class NotWritable(JobError):
    """A place the job must write refuses it: the output folder, HF_HOME."""

    exit_code = NOT_WRITABLE


class OptedOut(JobError):
    """The person asked not to be made into a bot (cloud/consent.py): never retried."""

    exit_code = OPTED_OUT


class TransientError(JobError):
    exit_code = TRANSIENT


class InternalError(JobError):
    """Something the job did not expect: a bug. Never retried (a rerun would fail the same)."""

    exit_code = INTERNAL


def classify(error: BaseException) -> JobError:
    """Any exception as a JobError, for the one boundary at the top of each command.

    Library and OS errors the job knows are mapped to their codes; anything else is an
    InternalError that names its type and where it arose. A foreign exception's own message is
    never shown: it may quote a server's body or headers, and with them a token.
    """
    import errno
    import zlib

    if isinstance(error, JobError):
        return error
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        # Another host (the platform's retry) has its own disk.
        return TransientError(f"no space left on the device ({error.strerror})")
    if isinstance(error, (zlib.error, EOFError)):
        return CorruptInput(f"a compressed input is damaged ({type(error).__name__})")
    if isinstance(error, UnicodeDecodeError):
        return CorruptInput(f"an input is not UTF-8 text (byte {error.start})")
    if isinstance(error, RecursionError):
        return CorruptInput("an input is nested too deeply to read")
    if type(error).__name__ == "OfflineModeIsEnabled":  # huggingface_hub's, not imported here
        return BadConfig("HF_HUB_OFFLINE is set: the Hub cannot be reached; unset it to push")
    if isinstance(error, MemoryError):
        return TransientError("out of memory")
    where = ""
    tb = error.__traceback__
    while tb is not None:  # the innermost frame of the job's own code
        if "/job/" in tb.tb_frame.f_code.co_filename:
            code = tb.tb_frame.f_code
            where = f" in {code.co_filename.rsplit('/job/', 1)[1]}:{tb.tb_lineno} ({code.co_name})"
        tb = tb.tb_next
    return InternalError(f"internal error: {type(error).__name__}{where}; please report it")
