"""One error hierarchy for eoflow.

Every message names the culprit (file, layer, band, parameter), says what is wrong and what to do.
The CLI prints ``str(error)`` on one line and exits with :attr:`EoflowError.exit_code`.
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "ConfigError",
    "DataError",
    "EoflowError",
    "InputError",
    "InternalError",
    "ModelError",
]


class EoflowError(Exception):
    """Base class of every error eoflow raises on purpose.

    Parameters
    ----------
    message
        What is wrong, naming the culprit.
    hint
        What the user should do about it (appended after ``" -- "``).
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} -- {hint}")

    def one_line(self) -> str:
        """The message squeezed onto one line, as the CLI prints it."""
        return " ".join(str(self).split())


class InputError(EoflowError):
    """An input file, layer, band or area is missing, unreadable or unusable."""


class ConfigError(EoflowError):
    """A configuration file or parameter is invalid."""


class DataError(EoflowError):
    """The data themselves cannot support the requested computation (e.g. no valid frames)."""


class ModelError(EoflowError):
    """A model file is missing, corrupt or does not fit the data."""


class ClusterError(EoflowError):
    """The Dask cluster cannot be reached or lost the work."""


class InternalError(EoflowError):
    """A bug in eoflow (exit code 1)."""

    exit_code = 1
