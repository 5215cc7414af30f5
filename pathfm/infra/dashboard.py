"""``pathfm sweep dashboard SWEEP_DIR_OR_STORAGE``: optuna-dashboard on an Optuna study's storage.

The storage is a sweep folder of ``pathfm sweep optuna`` (its ``optuna.db``), an SQLite ``.db`` file or
any SQLAlchemy URL (``postgresql://...``). The dashboard listens on localhost unless told otherwise;
optuna-dashboard is the optional extra ``pip install 'pathfm[dashboard]'``.
"""

from __future__ import annotations

from pathlib import Path

from pathfm.errors import PathfmError
from pathfm.records import SweepFolder


def storage_url(target: str | Path) -> str:
    """The storage URL of a sweep folder, a ``.db`` file or a URL (returned unchanged)."""
    text = str(target)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        db = SweepFolder(path).optuna_db  # the default storage file of pathfm.sweeps.optuna_study
        if not db.is_file():
            raise PathfmError(f"{path}: no {db.name} in this folder; give the folder of a `pathfm sweep optuna` "
                              "study, its .db file or the study's storage URL (e.g. postgresql://...)")
        path = db
    if not path.is_file():
        raise PathfmError(f"{target}: not a sweep folder, an Optuna .db file nor a storage URL")
    return f"sqlite:///{path.resolve()}"


def serve(target: str | Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run optuna-dashboard on the study storage of ``target`` until interrupted."""
    url = storage_url(target)
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise PathfmError("the dashboard needs optuna-dashboard: pip install 'pathfm[dashboard]'") from None
    print(f"optuna-dashboard for {url} at http://{host}:{port} (Ctrl-C stops it)", flush=True)
    run_server(url, host=host, port=port)
