"""Error types that map to exit codes.

Every error a user can cause is a `UserError`: the CLI prints its one-line message and exits 2,
with no traceback unless `--debug` is given. A step that ran but did not succeed (a failed gate,
a training command that exited non-zero) raises `StepFailed` and exits 1. A service that could not be
reached or answered nonsense raises `TransientError` (also exit 2: fail closed), which callers may retry
but must never read as "nothing there".
"""

from __future__ import annotations


class LeptonError(Exception):
    """Base class: carries the exit code the CLI should use."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class UserError(LeptonError):
    """Bad input: config, flags, files, names. Exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A problem in lepton.yml; `where` is `file:line` and the message names the key."""


class RegistryError(UserError):
    """The registry is missing, is not a registry, is damaged, or refused a request."""


class NotFound(RegistryError):
    """A positive answer: the registry was read and does not hold what was asked for (no such model,
    version or alias). Only this error may be read as "no baseline"; every other error fails closed."""


class TransientError(LeptonError):
    """A network or service failure (connection refused, timeout, 5xx, garbage answer). Not a usage
    error, so it is kept apart from `UserError`; still exit 2, and never read as an empty answer."""

    exit_code = 2


class TrustError(LeptonError):
    """A signature, digest or blessing did not verify. Exit code 2: fail closed."""

    exit_code = 2


class StepFailed(LeptonError):
    """A step ran and its verdict is negative (failed gate, failed training). Exit code 1."""

    exit_code = 1
