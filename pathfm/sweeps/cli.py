"""``pathfm sweep``: run, resume, inspect and collect sweeps; plain Optuna studies.

    pathfm sweep run SPEC.yaml [--address auto|ray://HOST:10001] [--storage PATH] [--dry-run]
    pathfm sweep resume DIR|URI [--address ...] [--retry-errored]   # URI: an object-store sweep, staged here first
    pathfm sweep status DIR
    pathfm sweep collect DIR
    pathfm sweep reference DIR [--device cpu]
    pathfm sweep optuna SPEC.yaml [--storage sqlite:///study.db|journal:///study.journal] [--n-trials TOTAL] [--workers N]
    pathfm sweep dashboard DIR_OR_STORAGE [--port 8080]
    pathfm sweep slurm-script SPEC.yaml --nodes N --gpus-per-node G --partition P --storage /shared/sweeps

Nothing heavy is imported at module level (``pathfm --help`` stays instant).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from pathfm.records.sweep_folder import OPTUNA_DB_FILE


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="Ray Tune / Optuna sweeps of training runs",
                              description="Run every trial of a sweep spec, resume it, inspect it, collect results.")
    sub = p.add_subparsers(dest="sweep_cmd", metavar="CMD")
    sub.required = True

    run = sub.add_parser("run", help="launch a sweep (local Ray by default)")
    run.add_argument("spec", help="sweep spec YAML (see sweeps/examples/)")
    run.add_argument("--address", default=None,
                     help="Ray cluster to join: 'auto' (on a cluster node) or 'ray://HEAD:10001'; default: local Ray")
    run.add_argument("--storage", default="runs/sweeps", help="folder holding the sweep folder (shared on clusters), file:///abs/path, or an object-store "
                     "URI (s3://bucket/sweeps, gs://...: run in a local staging folder, mirrored there)")
    run.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate every trial, print count/resources/cost, run one CPU step, and stop")
    run.add_argument("--step-time", type=float, default=None,
                     help="seconds per training step on the target device (for the --dry-run cost estimate)")
    run.add_argument("--autoscaling", action="store_true",
                     help="the cluster adds nodes on demand: skip the up-front check that a node can host a trial")
    run.add_argument("-q", "--quiet", action="store_true", help="no line per trial (default: a line as each starts and ends)")
    run.add_argument("-v", "--verbose", action="store_true", help="also Ray Tune's status and per-trial tables and the trials' logs")
    run.set_defaults(func=_run)

    res = sub.add_parser("resume", help="continue a sweep whose driver stopped (finished trials are kept)")
    res.add_argument("sweep_dir", help="the sweep folder (or its staging folder), or an object-store sweep's URI "
                                       "(<--storage URI>/<name>), e.g. from another machine after the driver's was lost")
    res.add_argument("--address", default=None)
    res.add_argument("--num-cpus", type=int, default=None)
    res.add_argument("--retry-errored", action="store_true", help="also retry trials that failed")
    res.add_argument("--autoscaling", action="store_true", help="see `pathfm sweep run --autoscaling`")
    res.add_argument("-q", "--quiet", action="store_true", help="no line per trial")
    res.add_argument("-v", "--verbose", action="store_true", help="also Ray Tune's status and per-trial tables and the trials' logs")
    res.set_defaults(func=_resume)

    st = sub.add_parser("status", help="table of the trials of a sweep folder (no Ray needed)")
    st.add_argument("sweep_dir")
    st.set_defaults(func=_status)

    co = sub.add_parser("collect", help="(re)build results.parquet from the trial folders")
    co.add_argument("sweep_dir")
    co.set_defaults(func=_collect)

    rf = sub.add_parser("reference", help="evaluate a sweep's reference rows (random init, colour histogram) "
                                          "here, if missing, and collect")
    rf.add_argument("sweep_dir")
    rf.add_argument("--device", default=None, help="cpu, cuda or auto (default: the sweep's resources)")
    rf.set_defaults(func=_reference)

    op = sub.add_parser("optuna", help="a plain Optuna study (no Ray) on an RDB storage, with pruning")
    op.add_argument("spec")
    op.add_argument("--storage", default=None,
                    help=f"SQLAlchemy URL (default: sqlite:///<sweep folder>/{OPTUNA_DB_FILE}; PostgreSQL for many hosts), or "
                    "journal:///PATH: a file-locked Optuna journal, no server, for shared filesystems (SQLite on "
                    "NFS/Lustre/... with --workers > 1 is refused)")
    op.add_argument("--dir", default="runs/sweeps", help="folder holding the sweep folder (trial folders)")
    op.add_argument("--n-trials", type=int, default=None,
                    help="TOTAL trials of the study (default: search.num_samples); running again continues up to it")
    op.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    op.add_argument("--heartbeat", type=int, default=60, metavar="S",
                    help="seconds between a trial's heartbeats; a trial silent for 2 x S, or 1.5 x the longest pause "
                    "measured in this sweep + S if longer (its worker died), is retried")
    op.add_argument("--max-retry", type=int, default=2, help="retries of a trial whose worker died or was interrupted")
    op.set_defaults(func=_optuna)

    db = sub.add_parser("dashboard", help="optuna-dashboard on an Optuna study (sweep folder, .db file or URL)")
    db.add_argument("target", metavar="SWEEP_DIR_OR_STORAGE")
    db.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: localhost only)")
    db.add_argument("--port", type=int, default=8080)
    db.set_defaults(func=_dashboard)

    sl = sub.add_parser("slurm-script", help="write an sbatch script: Ray head + workers in one SLURM allocation, "
                                             "then the sweep (docs/cluster.md)")
    sl.add_argument("spec")
    sl.add_argument("--nodes", type=int, required=True)
    sl.add_argument("--gpus-per-node", type=int, required=True)
    sl.add_argument("--cpus-per-node", type=int, default=8)
    sl.add_argument("--partition", required=True)
    sl.add_argument("--storage", required=True, help="absolute path on a file system every node mounts")
    sl.add_argument("--time", default="24:00:00", help="SLURM time limit (default 24:00:00)")
    sl.add_argument("--account", default=None)
    sl.add_argument("--port", type=int, default=6379, help="Ray head port")
    sl.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                    help="an extra sbatch option, e.g. --sbatch=--qos=high (repeatable)")
    sl.add_argument("-o", "--output", default=None, help="script path (default: <spec name>.sbatch)")
    sl.set_defaults(func=_slurm_script)


def _verbosity(args) -> int:
    if getattr(args, "quiet", False):
        return 0
    return 2 if getattr(args, "verbose", False) else 1


def _sigterm_as_sigint() -> None:
    """SIGTERM (a scheduler's kill) stops the sweep like Ctrl-C: Tune saves its state and exits."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, handler)


def _run(args) -> int:
    from pathfm.sweeps.runner import run_sweep

    _sigterm_as_sigint()
    sweep_dir = run_sweep(args.spec, storage=args.storage, address=args.address, num_cpus=args.num_cpus,
                          dry_run=args.dry_run, verbose=_verbosity(args), step_time=args.step_time,
                          autoscaling=args.autoscaling)
    if not args.dry_run:
        print(sweep_dir)
    return 0


def _resume(args) -> int:
    from pathfm.sweeps.runner import resume_sweep

    _sigterm_as_sigint()
    print(resume_sweep(args.sweep_dir, address=args.address, num_cpus=args.num_cpus,
                       retry_errored=args.retry_errored, verbose=_verbosity(args), autoscaling=args.autoscaling))
    return 0


def _status(args) -> int:
    from pathlib import Path

    from pathfm.errors import PathfmError
    from pathfm.sweeps.status import format_status

    if not Path(args.sweep_dir).is_dir():
        raise PathfmError(f"sweep folder '{args.sweep_dir}' does not exist")
    print(format_status(args.sweep_dir))
    return 0


def _collect(args) -> int:
    from pathfm.infra import object_store
    from pathfm.sweeps.collect import collect, collect_from_store

    if object_store.is_uri(args.sweep_dir) and not args.sweep_dir.startswith("file://"):
        print(collect_from_store(args.sweep_dir))  # trial folders read from the store, results written back
        return 0
    print(collect(object_store.local_root(args.sweep_dir) if args.sweep_dir.startswith("file://") else args.sweep_dir))
    return 0


def _reference(args) -> int:
    from pathlib import Path

    from pathfm.errors import PathfmError
    from pathfm.records import SweepFolder
    from pathfm.sweeps.collect import collect
    from pathfm.sweeps.reference import ensure_reference
    from pathfm.sweeps.spec import load_spec

    d = Path(args.sweep_dir).expanduser().resolve()
    folder = SweepFolder(d)
    if not folder.spec.exists():
        raise PathfmError(f"{d} is not a sweep folder (no {folder.spec.name})")
    spec = load_spec(folder.spec)
    if not (spec.eval.enabled and spec.eval.reference):
        spec = spec.model_copy(update={"eval": spec.eval.model_copy(update={"enabled": True, "reference": True})})
    trials = folder.read_trials_file() or []
    info = ensure_reference(spec, d, trials, device=args.device)
    print(collect(d))
    return 0 if info.get("status") == "DONE" else 1


def _optuna(args) -> int:
    from pathfm.sweeps.optuna_study import run_optuna_study

    _sigterm_as_sigint()  # a scheduler's SIGTERM stops the running trial like Ctrl-C: it is queued for retry
    out = run_optuna_study(args.spec, storage=args.storage, root=args.dir, n_trials=args.n_trials,
                           workers=args.workers, heartbeat_s=args.heartbeat, max_retry=args.max_retry)
    print(out)
    return 0


def _slurm_script(args) -> int:
    from pathlib import Path

    from pathfm.io import atomic_write_text
    from pathfm.infra.slurm import SlurmJob, sbatch_script
    from pathfm.sweeps.spec import load_spec

    spec = load_spec(args.spec)
    job = SlurmJob(nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_node=args.cpus_per_node,
                   partition=args.partition, time=args.time, account=args.account, port=args.port,
                   extra_sbatch=tuple(args.sbatch))
    text = sbatch_script(args.spec, spec, args.storage, job)
    out = Path(args.output or f"{spec.name}.sbatch")
    atomic_write_text(out, text)
    out.chmod(0o755)
    print(f"{out}  (submit with: sbatch {out})")
    return 0


def _dashboard(args) -> int:
    from pathfm.infra.dashboard import serve

    try:
        serve(args.target, host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="pathfm")
    register(parser.add_subparsers(dest="verb"))
    a = parser.parse_args()
    sys.exit(a.func(a))
