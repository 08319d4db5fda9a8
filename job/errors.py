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


class TransientError(JobError):
    exit_code = TRANSIENT
