"""``pathfm audit leakage RUN --task TASK``: slides / patients a run pretrained on that a task tests on.

Examples::

    pathfm audit leakage runs/cpu --task osteo
    pathfm audit leakage runs/sweeps/s1/trial_abc --task my_tcga_task.yaml --task crc

Exit status 1 when any task overlaps the run's training slides or patients, else 0.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="audits of a run (leakage between pretraining slides and tasks)")
    sub = p.add_subparsers(dest="audit", metavar="AUDIT")
    sub.required = True
    lk = sub.add_parser(
        "leakage", help="compare a run's training slides/patients with a task's slide/patient/case ids",
        description=__doc__.split("Examples::", 1)[0], epilog=__doc__.split("Examples::", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lk.add_argument("run_dir", help="a run directory (holds training_slides.csv)")
    lk.add_argument("--task", action="append", dest="tasks", required=True, metavar="TASK",
                    help="bundled task name or a task .yaml/.csv; repeat for several")
    lk.set_defaults(func=_leakage)


def _leakage(args) -> int:
    from pathfm.eval.leakage import audit_run

    audits = [audit_run(args.run_dir, t) for t in args.tasks]
    for a in audits:
        print(a.summary())
    return 1 if any(a.leaked for a in audits) else 0
