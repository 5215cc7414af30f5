"""User-facing errors: each message names the file or field at fault and the fix.

The CLI prints these without a traceback (exit code 2); anything else is a bug and keeps its traceback.
"""


class PathfmError(ValueError):
    """Bad input that the user can fix (a file, a field, a value)."""


class ConfigError(PathfmError):
    """A config that cannot be used; the message names the field and the allowed values."""


class SweepError(PathfmError):
    """A sweep that cannot start or resume (names the folder/field and the fix)."""


class SlideError(PathfmError):
    """A slide that cannot be opened or used (names the path)."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the message names the loss and the step."""


class StopTrial(Exception):
    """Raised by a sweep's report function to stop a trial early (a pruner's or scheduler's decision)."""
