"""The one owner of what pathfm writes on disk: the run folder (:mod:`pathfm.records.run_folder`), the sweep
folder (:mod:`pathfm.records.sweep_folder`) and a sweep trial's record (:mod:`pathfm.records.trial`).

Every other module asks these for a path or a record (``RunFolder(run_dir).metrics``,
``SweepFolder(sweep_dir).trials()``, ``update_trial(trial_dir, status="TERMINATED")``) or imports a name from
them; none spells a file name (tests/test_file_owner.py). The row layouts of the Parquet files are in
:mod:`pathfm.results`. Nothing beyond the standard library is imported here.
"""

from __future__ import annotations

from pathfm.records.run_folder import RunFolder, checkpoint_name, checkpoint_step, eval_diagnostics_beside
from pathfm.records.sweep_folder import (SweepFolder, optuna_trial_dirname, optuna_trial_number, read_sweep_meta,
                                         sweep_meta, trial_dirname)
from pathfm.records.trial import TrialRecord, read_trial, update_trial

__all__ = ["RunFolder", "SweepFolder", "TrialRecord", "checkpoint_name", "checkpoint_step", "eval_diagnostics_beside",
           "optuna_trial_dirname", "optuna_trial_number", "read_sweep_meta", "read_trial", "sweep_meta",
           "trial_dirname", "update_trial"]
