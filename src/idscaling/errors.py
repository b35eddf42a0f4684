"""Errors that a user can act on. The CLI prints them as one line, without a traceback."""


class IDScalingError(Exception):
    """Base class: the message names the bad thing (corpus, key, file) and what is wrong."""


class ConfigError(IDScalingError):
    """A configuration value is invalid."""


class DataError(IDScalingError):
    """Input data is missing, empty, malformed or too small for what is asked of it."""


class TrainingError(IDScalingError):
    """Training cannot go on (a non-finite loss, say)."""


class OutputError(IDScalingError):
    """An output cannot be written (its file system is full, say)."""
