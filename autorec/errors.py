"""Exceptions of the suite.  Every error names what is wrong and, where it applies, the fix."""


class AutoRecBenchError(Exception):
    """Base class of every error this suite raises on purpose."""


class DataError(AutoRecBenchError):
    """A dataset is unknown, missing, corrupt or malformed.  The message names file, line and problem."""


class ChecksumError(DataError):
    """A downloaded or local archive does not match its registered checksum."""


class SplitError(AutoRecBenchError):
    """A split is invalid: unknown kind, bad arguments, or test ratings leaking into train/validation."""


class ConfigError(AutoRecBenchError):
    """An invalid model / run configuration, rejected before any work starts."""


class MissingDependencyError(AutoRecBenchError):
    """An optional dependency is not installed; the message names the ``pip install`` that fixes it."""


class TrainingDivergedError(AutoRecBenchError):
    """Training produced a NaN or infinite loss; the message names the epoch and the config."""


class MemoryBudgetError(AutoRecBenchError):
    """A run would not fit in the memory budget; the message gives the estimate and the limit."""
