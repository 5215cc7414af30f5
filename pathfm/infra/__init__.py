"""The infrastructure a sweep runs on, apart from what a sweep is (:mod:`pathfm.sweeps`).

Modules: ``ray_cluster`` (connecting to Ray, resource checks, what Tune reserves per trial), ``object_store``
(``--storage`` on object stores: the store opened, the local staging folder named), ``folder_mirror`` (one
local folder and its copy in the store: incremental push and pull, atomic uploads), ``sweep_sync`` (which
folders of an object-store sweep sync when: each trial its own from its node, the driver the sweep-level
files), ``optuna_storage`` (where a plain Optuna study keeps its state, safe on shared filesystems), ``hang``
(hung-trial watchdog), ``slurm`` (``pathfm sweep slurm-script``), ``dashboard`` (``pathfm sweep dashboard``).

None of them imports :mod:`pathfm.sweeps` at run time (``ray_cluster`` and ``slurm`` read a ``SweepSpec``'s
name and resources; the type is imported for annotations only).
"""
