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


class NonFiniteLossError(PathfmError, RuntimeError):
    """A loss became NaN or inf; the message names the loss, the step and the fix (the CLI prints it as one line;
    a sweep trial records it in trial.json, a run.guards guard in DONE)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM stopped training at the end of a step, after a checkpoint of that step was saved; the message names
    it and how to continue (the CLI prints it as one line and exits 143 = 128 + SIGTERM, as the signal would).
    A KeyboardInterrupt: what stops on Ctrl-C stops on it (a `pathfm sweep optuna` worker queues the trial's retry
    and ends), and no ``except Exception`` takes it for a failed trial."""


class StopTrial(Exception):
    """Raised by a sweep's report function to stop a trial early (a pruner's or scheduler's decision)."""
