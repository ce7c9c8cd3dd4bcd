"""Does each SafeEdge package resolve inside one install, and to no other distribution?

DESIGN.md keeps short top-level import names (``agent``, ``drivers``, ``rules``, ``buffer``,
``provisioning``, ``central``) and installs the agent into its own venv; this is the check it
promises. For each name, with the interpreter that runs it:

- the module imports, is a regular package, and its ``__file__`` is under ``root`` (the
  install's site-packages, or the checkout for the editable dev install);
- ``importlib.metadata.packages_distributions()`` names only ``safeedge`` for it (no other
  installed distribution declares a top-level module of that name), and every ``safeedge``
  distribution found is located under ``root``;
- no other entry of ``sys.path`` holds a module or package of that name (a copy without
  metadata would shadow or be shadowed depending on path order).

Standard library only, so it runs unchanged in a fresh venv:
``python install_check.py ROOT`` prints one line per problem and exits 1, or prints ``ok``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path

__all__ = ["DISTRIBUTION", "PACKAGES", "problems"]

PACKAGES = ("agent", "drivers", "rules", "buffer", "provisioning", "central")
DISTRIBUTION = "safeedge"


def _copies(entry: Path, name: str) -> list[Path]:
    """What on one sys.path entry would import as ``name`` (package, namespace portion, module)."""
    found = [entry / name] if (entry / name).is_dir() else []
    found += [p for p in (entry / f"{name}.py", entry / f"{name}.pyc") if p.is_file()]
    found += [p for p in entry.glob(f"{name}.*.so") if p.is_file()]
    return found


def problems(root: Path) -> list[str]:
    """Every way the packages fail to resolve inside ``root`` alone; [] when they all do."""
    root = root.resolve()
    out: list[str] = []
    owners = importlib.metadata.packages_distributions()
    ours = [d for d in importlib.metadata.distributions() if d.name == DISTRIBUTION]
    if not ours:
        out.append(f"no {DISTRIBUTION} distribution is installed")
    for dist in ours:
        where = Path(str(dist.locate_file(""))).resolve()
        if not where.is_relative_to(root):
            out.append(f"a {DISTRIBUTION} distribution is installed at {where}, outside {root}")
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            out.append(f"{name}: cannot be imported: {exc}")
            continue
        if module.__file__ is None:
            out.append(f"{name}: a namespace package, not SafeEdge's (which has an __init__.py)")
            continue
        package_dir = Path(module.__file__).resolve().parent
        if not package_dir.is_relative_to(root):
            out.append(f"{name}: imported from {package_dir}, outside {root}")
        dists = owners.get(name, [])
        if DISTRIBUTION not in dists:
            out.append(f"{name}: no installed {DISTRIBUTION} distribution declares it")
        others = sorted({d for d in dists if d != DISTRIBUTION})
        if others:
            out.append(f"{name}: also provided by the distribution(s) {', '.join(others)}")
        seen = {package_dir}
        for entry in sys.path:
            for copy in _copies(Path(entry or ".").resolve(), name):
                if copy.resolve() not in seen:
                    seen.add(copy.resolve())
                    out.append(f"{name}: another copy on sys.path at {copy}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: install_check.py ROOT", file=sys.stderr)
        return 2
    found = problems(Path(argv[0]))
    for line in found:
        print(line)
    if not found:
        print("ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
