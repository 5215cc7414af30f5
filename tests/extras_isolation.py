"""pathfm as it runs with only some of its optional extras installed, simulated in this environment (which has
them all): a child Python that starts without this environment's site-packages (``-S``) and gets a folder of
links to exactly the installed files of the distributions that installation would contain: the dependency
closure of pathfm's core requirements plus the chosen extras, read from the packages' own metadata (markers
evaluated, requested extras followed). For any other module the child's import system finds nothing, as a
real installation's would."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement

from pathfm.config import REPO_ROOT


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(extras: set[str]) -> set[str]:
    """Canonical names of the distributions ``pip install pathfm[extras]`` would bring, from the metadata of
    what is installed here."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [("pathfm", frozenset(extras))]
    while todo:
        dist, wanted = todo.pop()
        try:
            reqs = requires(dist) or []
        except PackageNotFoundError:
            continue  # a requirement whose marker holds elsewhere only (another platform) is not installed
        seen.add(canonical(dist))
        for text in reqs:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            if canonical(req.name) not in seen or req.extras:
                todo.append((req.name, frozenset(req.extras)))
    return seen - {"pathfm"}


def blocked_modules(extras: set[str]) -> set[str]:
    """Top-level modules installed here whose distributions that installation would not have."""
    keep = installed_closure(extras)
    return {module for module, dists in packages_distributions().items() if not any(canonical(d) in keep for d in dists)}


def site_folder(extras: set[str], folder: Path) -> Path:
    """``folder`` filled with links to the top-level files and folders of every distribution in the closure."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(installed_closure(extras)):
        dist = distribution(name)
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or top.endswith(".pth") and "pathfm" in top:
                continue
            link, target = folder / top, base / top
            if target.exists() and not link.exists():
                link.symlink_to(target)
    return folder


def run_with_extras(extras: set[str], code: str, cwd: Path, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python that can import only what ``pathfm[extras]`` would install (and pathfm
    from this checkout)."""
    site = site_folder(extras, cwd / "site-packages")
    boot = f"import site, sys; site.addsitedir({str(site)!r}); sys.path.insert(0, {str(REPO_ROOT)!r})\n"
    return subprocess.run([sys.executable, "-S", "-c", boot + code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout_s)
