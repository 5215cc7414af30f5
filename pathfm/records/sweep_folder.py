"""The sweep folder (``<storage>/<sweep name>``): the one owner of every name pathfm gives a file in it, and
the readers and writers of its records. Other modules ask a :class:`SweepFolder` for a path or a record, or
import a name from here; none spells one (tests/test_file_owner.py). Building a SweepFolder reads and creates
nothing.

::

    sweep_spec.yaml        the spec as run (a resumed sweep and `pathfm sweep reference` read it back)
    trials.json            the spec's expanded trials (rebuilt from the spec when it is missing)
    sweep_meta.json        what the sweep is: params, arms and their labels, objective, study hints (:func:`sweep_meta`)
    results.parquet        the tidy rows, rebuilt from the folders by `pathfm sweep collect` (pathfm.sweeps.collect)
    study_plan.json        an ablation study's plan (`pathfm ablate run`)
    trial_<id>/            a Ray Tune trial's run folder (:class:`pathfm.records.RunFolder`, with trial.json)
    optuna_<NNNNN>/        a plain-Optuna trial's run folder (pathfm.sweeps.optuna_study)
    lost_trials/           trial folders a restored experiment does not know (pathfm.sweeps.runner)
    reference/             the baselines evaluated once per sweep: reference.json, and eval.parquet and eval_cache/
                           as in a run folder (pathfm.sweeps.reference)
    optuna.db, budget.lock the plain-Optuna study's default storage and its workers' budget lock
    mirror_uri.txt, staged_at.txt   a staged object-store sweep: where it is mirrored, where it was staged
                           (pathfm.infra.object_store, pathfm.infra.sweep_sync)
    tuner.pkl              Ray Tune's own experiment state (Tune names it; read here to tell a sweep folder)
    ../.pathfm_reference/<key>.parquet   reference rows cached for every sweep of the same storage folder
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pathfm.errors import PathfmError, SweepError
from pathfm.io import atomic_write_json, atomic_write_text
from pathfm.records.run_folder import RunFolder
from pathfm.records.trial import TrialRecord

SPEC_FILE = "sweep_spec.yaml"
TRIALS_FILE = "trials.json"
META_FILE = "sweep_meta.json"
RESULTS_FILE = "results.parquet"
STUDY_PLAN_FILE = "study_plan.json"
TRIAL_PREFIX = "trial_"  # + Ray Tune's trial id
OPTUNA_TRIAL_PREFIX = "optuna_"  # + the Optuna trial number in 5 digits
LOST_TRIALS_DIR = "lost_trials"
REFERENCE_DIR = "reference"
REFERENCE_FILE = "reference.json"
REFERENCE_CACHE_DIR = ".pathfm_reference"  # beside the sweep folders of one storage folder
OPTUNA_DB_FILE = "optuna.db"
BUDGET_LOCK_FILE = "budget.lock"
MIRROR_FILE = "mirror_uri.txt"
STAGED_AT_FILE = "staged_at.txt"
TUNER_STATE_FILE = "tuner.pkl"

#: every name above that is a whole file or folder name (tests/test_file_owner.py forbids them elsewhere)
NAMES = (SPEC_FILE, TRIALS_FILE, META_FILE, RESULTS_FILE, STUDY_PLAN_FILE, LOST_TRIALS_DIR, REFERENCE_DIR,
         REFERENCE_FILE, REFERENCE_CACHE_DIR, OPTUNA_DB_FILE, BUDGET_LOCK_FILE, MIRROR_FILE, STAGED_AT_FILE,
         TUNER_STATE_FILE)
#: the start of every name built from an id or a number
PREFIXES = (TRIAL_PREFIX, OPTUNA_TRIAL_PREFIX)


def trial_dirname(trial_id: str) -> str:
    """A Ray Tune trial's folder (and Tune trial name): ``trial_<id>``."""
    return f"{TRIAL_PREFIX}{trial_id}"


def optuna_trial_dirname(number: int) -> str:
    """A plain-Optuna trial's folder: ``optuna_00003``."""
    return f"{OPTUNA_TRIAL_PREFIX}{number:05d}"


def optuna_trial_number(dirname: str) -> int:
    """The Optuna trial number a plain-Optuna trial folder's name holds."""
    return int(dirname.removeprefix(OPTUNA_TRIAL_PREFIX))


def sweep_meta(spec: Any, trials: list[dict]) -> dict:
    """The content of ``sweep_meta.json`` for a :class:`pathfm.sweeps.spec.SweepSpec` and its trials."""
    return {
        "sweep": spec.name, "study": spec.meta.study, "version": spec.meta.version,
        "description": spec.meta.description, "baseline_arm": spec.meta.baseline_arm,
        "comparisons": [list(c) for c in spec.meta.comparisons], "params": list(spec.space),
        "searched_params": spec.searched_params, "arms": [a.name for a in spec.arms or []],
        "arm_labels": {a.name: a.labels for a in spec.arms or [] if a.labels},
        **({"analysis": spec.meta.analysis} if spec.meta.analysis else {}),
        "seeds": list(spec.seeds), "objective": spec.objective.model_dump(), "algorithm": spec.search.algorithm,
        "n_trials": len(trials), "base": spec.base, "created_at": time.time(),
    }


def read_sweep_meta(sweep_dir: str | Path) -> dict:
    """``<sweep_dir>/sweep_meta.json``: ``{}`` when the folder has none (results made by hand or by
    ``pathfm eval``); a file that is not a JSON mapping is a :class:`PathfmError` naming it and the fix."""
    path = Path(sweep_dir) / META_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PathfmError(f"{path}: not readable as JSON ({e}); restore it from the sweep's copy or delete it "
                          "(results are then rebuilt from the trial folders alone)") from None
    if not isinstance(meta, dict):
        raise PathfmError(f"{path}: expected a JSON mapping (sweep, params, arms, ...), got {type(meta).__name__}")
    return meta


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class SweepFolder:
    """The paths and records of one sweep folder (module docstring)."""

    __slots__ = ("path",)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SweepFolder({str(self.path)!r})"

    # ------------------------------------------------------------------------------------ paths
    @property
    def spec(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def trials_file(self) -> Path:
        return self.path / TRIALS_FILE

    @property
    def meta(self) -> Path:
        return self.path / META_FILE

    @property
    def results(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def study_plan(self) -> Path:
        return self.path / STUDY_PLAN_FILE

    def trial_dir(self, trial_id: str) -> Path:
        return self.path / trial_dirname(trial_id)

    def optuna_trial_dir(self, number: int) -> Path:
        return self.path / optuna_trial_dirname(number)

    @property
    def lost_trials(self) -> Path:
        return self.path / LOST_TRIALS_DIR

    @property
    def reference_dir(self) -> Path:
        return self.path / REFERENCE_DIR

    @property
    def reference_info(self) -> Path:
        return self.reference_dir / REFERENCE_FILE

    @property
    def reference_eval(self) -> Path:
        return RunFolder(self.reference_dir).eval

    def reference_cache(self, key: str) -> Path:
        """The reference rows of settings ``key`` cached beside this sweep folder (shared by its siblings)."""
        return self.path.parent / REFERENCE_CACHE_DIR / f"{key}.parquet"

    @property
    def optuna_db(self) -> Path:
        return self.path / OPTUNA_DB_FILE

    @property
    def budget_lock(self) -> Path:
        return self.path / BUDGET_LOCK_FILE

    @property
    def mirror_note(self) -> Path:
        return self.path / MIRROR_FILE

    @property
    def staged_at_note(self) -> Path:
        return self.path / STAGED_AT_FILE

    def holds_sweep(self) -> bool:
        """Whether a sweep was started here (its spec, or Ray Tune's state, is there)."""
        return self.spec.exists() or (self.path / TUNER_STATE_FILE).exists()

    # ------------------------------------------------------------------------------------ trials
    def trials(self) -> list[tuple[Path, TrialRecord]]:
        """``(folder, record)`` of every trial folder (a folder holding trial.json), each read once, sorted by
        trial index then name (an unreadable trial.json reads as an empty record)."""
        found = [(p, TrialRecord.read(p) or TrialRecord()) for p in self.path.iterdir()
                 if p.is_dir() and RunFolder(p).trial.exists()]
        return sorted(found, key=lambda t: (t[1].index if isinstance(t[1].index, int) else 1 << 30, t[0].name))

    def trial_dirs(self) -> list[Path]:
        """The trial folders, sorted as :meth:`trials`."""
        return [p for p, _ in self.trials()]

    def ray_trial_names(self) -> frozenset[str]:
        """The names of the Ray Tune trial folders here (``trial_<id>``; each syncs on its own with a store)."""
        if not self.path.is_dir():
            return frozenset()
        return frozenset(p.name for p in self.path.iterdir() if p.is_dir() and p.name.startswith(TRIAL_PREFIX))

    # ------------------------------------------------------------------------------------ records
    def read_meta(self) -> dict:
        return read_sweep_meta(self.path)

    def write_meta(self, meta: dict) -> None:
        atomic_write_json(self.meta, meta)

    def write_spec(self, spec: Any) -> None:
        """``sweep_spec.yaml`` of a SweepSpec."""
        atomic_write_text(self.spec, spec.to_yaml())

    def read_trials_file(self) -> list[dict] | None:
        """``trials.json`` (None when there is none); a damaged one is a SweepError naming it and the fix (it is
        the spec's expansion, so a sweep without it rebuilds it from ``sweep_spec.yaml``)."""
        path = self.trials_file
        if not path.exists():
            return None
        try:
            trials = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SweepError(f"{path}: not readable as JSON ({e}); restore it from a copy, or move it aside and run "
                             f"the command again to rebuild it from {SPEC_FILE}") from None
        if not isinstance(trials, list):
            raise SweepError(f"{path}: expected a JSON list of trials, got {type(trials).__name__}; move it aside and "
                             f"run the command again to rebuild it from {SPEC_FILE}")
        return trials

    def write_trials(self, trials: list[dict]) -> None:
        atomic_write_json(self.trials_file, trials)

    def read_reference(self) -> dict:
        """``reference/reference.json`` (``{}`` if missing or unreadable)."""
        info = _json_or_none(self.reference_info)
        return info if isinstance(info, dict) else {}

    def write_reference(self, info: dict) -> dict:
        self.reference_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.reference_info, info)
        return info

    def read_study_plan(self) -> dict | None:
        """``study_plan.json`` (None if missing or unreadable)."""
        plan = _json_or_none(self.study_plan)
        return plan if isinstance(plan, dict) else None

    def write_study_plan(self, plan: dict) -> Path:
        atomic_write_json(self.study_plan, plan)
        return self.study_plan
