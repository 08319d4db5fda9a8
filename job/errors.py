"""Errors a user can act on, each with its own exit code.

The job runs unattended (AWS Batch, Kubernetes), so the exit code is the interface: the platform
retries on ``TRANSIENT`` and gives up at once on the bad-input codes (see infra/). Keep the
numbers stable; they are documented in docs/exit-codes.md.
"""

from __future__ import annotations

import os
import re
import threading

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


# The secrets the job may be given, all from the environment. No line, log record or status
# may hold one, whatever path its text came by (a server that echoes the request, an
# exception's message): ``redact`` replaces each value with the variable's name.
SECRET_VARIABLES = (
    "TWITTER_BEARER_TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
MIN_SECRET_CHARS = 8  # shorter values ("x", "test") would blank ordinary words
SAID = threading.Event()  # the command's error line is out (``say``): never a second one


# What a terminal acts on rather than shows: control characters (ESC starts the sequences that
# move the cursor, set the title or, OSC 52, write the clipboard; a CR rewrites the line), the
# line separators, and the bidi overrides that reorder what is shown. A record anyone who can
# write the output may forge, an archive, a server: any of them can hold one.
_ACTS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def inert(text: str) -> str:
    """``text`` with every character a terminal would act on written as ``\\uXXXX``, which
    reads as itself and is a JSON string's own escape (``generate --json``'s lines stay
    JSON). Newlines and tabs stay: they are the output's own."""
    return _ACTS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def redact(text: str) -> str:
    """``text`` without the value of any secret the process was given."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= MIN_SECRET_CHARS and value in text:
            text = text.replace(value, f"<{name}>")
    return text


def say(error: JobError) -> None:
    """The one ``error:`` line a command ends with, on stderr, once."""
    import sys

    if not SAID.is_set():
        SAID.set()
        sys.stderr.write(f"error: {error}\n")
        sys.stderr.flush()


class JobError(Exception):
    """An error with a one-line message for the user and an exit code for the platform."""

    exit_code = INTERNAL

    def __init__(self, message: str) -> None:
        # One line, always: logs on Batch/K8s are read line by line. No secret, ever.
        super().__init__(inert(redact(" ".join(message.split()))))


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


class Preempted(TransientError):
    """SIGTERM in training: the checkpoint is written, and the task stops there (its retry
    resumes this bot and makes the rest), whatever bots it has left."""


class Terminated(BaseException):
    """SIGTERM arrived (the platform stops the job). A BaseException, as KeyboardInterrupt is:
    no ``except Exception`` on the way up (W&B's start, a picture's check) may swallow it; the
    command's boundary turns it into its line and exit 75."""


def stopped(signal: BaseException, then: str = "a rerun starts this step again") -> JobError:
    """The line and code of a stop: SIGTERM is transient (75), SIGINT the shell's 130;
    ``then`` says what follows it."""
    if isinstance(signal, KeyboardInterrupt):
        return Interrupted(f"interrupted (SIGINT); {then}")
    return TransientError(f"stopped by SIGTERM; {then}")


class Interrupted(JobError):
    exit_code = 130  # the shell's code for SIGINT


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from or during, each once."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


class InternalError(JobError):
    """Something the job did not expect: a bug. Never retried (a rerun would fail the same)."""

    exit_code = INTERNAL


def of_code(code: int, message: str) -> JobError:
    """The error of exit code ``code`` with ``message``: what a process of the job's own said
    (outputs/browser.py export_apart); a code of none of them is an InternalError."""
    kinds = JobError.__subclasses__()
    for kind in kinds:
        kinds.extend(kind.__subclasses__())
    for kind in kinds:
        if kind.__dict__.get("exit_code") == code:
            return kind(message)
    return InternalError(message)


def gpu_lost(error: BaseException) -> bool:
    """A CUDA error that leaves the process's context unusable (an illegal memory access, a
    device-side assert, an ECC or Xid fault): every later kernel of the process fails too, so
    a task of many bots stops at the first. Out of memory is not one: the next bot may fit."""
    for e in causes(error):
        text = str(e)
        if type(e).__name__ == "AcceleratorError" or (
            "CUDA error" in text and "out of memory" not in text
        ):
            return True
    return False


def detached(error: JobError) -> JobError:
    """``error`` with nothing that keeps its frames alive: a failed bot's traceback holds its
    model, Trainer and optimizer state (~25 GB of GPU memory for gpt2-xl), which the next bot
    of the task needs."""
    error.__traceback__ = error.__cause__ = error.__context__ = None
    return error


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
    if isinstance(error, (Terminated, KeyboardInterrupt)):
        return stopped(error)
    chain = causes(error)
    full = (errno.ENOSPC, errno.EDQUOT)
    if any(isinstance(e, OSError) and e.errno in full for e in chain) or any(
        # a library's own error that wraps the OS's (safetensors' SafetensorError)
        "No space left on device" in str(e) or "Disk quota exceeded" in str(e)
        for e in chain
    ):
        # Another host (the platform's retry) has its own disk.
        return TransientError("no space left on the device")
    if isinstance(error, (FileExistsError, NotADirectoryError, IsADirectoryError)):
        return NotWritable(
            f"{error.filename}: {error.strerror}: a file or folder stands where the job writes"
            " (remove it, or use another --out)"
        )
    if isinstance(error, PermissionError):
        return NotWritable(f"{error.filename}: permission denied to uid {os.getuid()}")
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        return BadConfig(f"a path the job makes is too long: {str(error.filename)[:120]}...")
    if isinstance(error, UnicodeEncodeError):
        return CorruptInput("an input holds text that is not Unicode (a lone surrogate)")
    if isinstance(error, RuntimeError) and "home directory" in str(error):
        return BadConfig("no home folder: this user has none; set HOME (or HF_HOME)")
    if isinstance(error, (zlib.error, EOFError)):
        return CorruptInput(f"a compressed input is damaged ({type(error).__name__})")
    if isinstance(error, UnicodeDecodeError):
        return CorruptInput(f"an input is not UTF-8 text (byte {error.start})")
    if isinstance(error, RecursionError):
        return CorruptInput("an input is nested too deeply to read")
    if type(error).__name__ == "OfflineModeIsEnabled":  # huggingface_hub's, not imported here
        return BadConfig("HF_HUB_OFFLINE is set: the Hub cannot be reached; unset it to push")
    if isinstance(error, MemoryError) or any(
        # torch's allocator under a memory cap: "DefaultCPUAllocator: can't allocate memory"
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
        for e in chain
    ):
        return TransientError("out of memory")
    if gpu_lost(error):
        return TransientError("the GPU failed (a CUDA error); a retry starts a fresh process")
    where = ""
    tb = error.__traceback__
    while tb is not None:  # the innermost frame of the job's own code
        if "/job/" in tb.tb_frame.f_code.co_filename:
            code = tb.tb_frame.f_code
            where = f" in {code.co_filename.rsplit('/job/', 1)[1]}:{tb.tb_lineno} ({code.co_name})"
        tb = tb.tb_next
    return InternalError(f"internal error: {type(error).__name__}{where}; please report it")
