"""Build the offline install bundle (``make bundle``): one archive for an air-gapped site.

Layout of ``dist/safeedge-bundle-<version>-<tag>.tar.gz`` (``<tag>`` e.g. ``cp311-x86_64``)::

    safeedge-bundle-<version>-<tag>/
      wheels/            the safeedge wheel and every runtime dependency's wheel
      requirements.txt   every wheel pinned with its sha256 (pip's hash-checking mode)
      TARGET             the Python version and machine the wheels are for
      SHA256SUMS         every file of the bundle (sha256sum -c)
      install.sh         systemd/install.sh (run it with --from-bundle)
      safeedge.service   the unit
      docs/              the documentation (commissioning, config, ...)
      examples/          the reference config

Dependency wheels come from ``pip download --only-binary=:all:`` for the requirements in
pyproject.toml, resolved for the Python running this script (so build it with the same Python
minor version and architecture as the gateway: ``TARGET`` records them and install.sh checks).
pip uses its cache and configured indexes; when it cannot reach one, the build fails with pip's
message (an offline build needs a warm pip cache or a local wheel directory: ``--find-links``).
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                   check=True)  # fmt: skip


def build(out_dir: Path, find_links: list[str]) -> Path:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    version = meta["version"]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}"
    name = f"safeedge-bundle-{version}-{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        wheels = root / "wheels"
        wheels.mkdir(parents=True)
        links = [a for link in find_links for a in ("--find-links", link)]
        _pip("wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO))
        _pip("download", "--quiet", "--only-binary=:all:", "-d", str(wheels), *links,
             *meta["dependencies"])  # fmt: skip
        reqs = []
        for whl in sorted(wheels.glob("*.whl")):
            dist, ver = whl.name.split("-")[:2]
            reqs.append(f"{dist}=={ver} --hash=sha256:{_sha256(whl)}")
        (root / "requirements.txt").write_text("\n".join(reqs) + "\n")
        (root / "TARGET").write_text(
            f"python={sys.version_info.major}.{sys.version_info.minor}\n"
            f"machine={platform.machine()}\n"
        )
        shutil.copy2(REPO / "systemd" / "install.sh", root / "install.sh")
        shutil.copy2(REPO / "systemd" / "safeedge.service", root / "safeedge.service")
        shutil.copytree(REPO / "docs", root / "docs")
        (root / "examples").mkdir()
        shutil.copy2(REPO / "examples" / "reference.toml", root / "examples" / "reference.toml")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        sums = [f"{_sha256(p)}  {p.relative_to(root)}" for p in files]
        (root / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        out_dir.mkdir(parents=True, exist_ok=True)
        archive = out_dir / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root, arcname=name)
    return archive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--find-links", action="append", default=[],
                        help="a local directory of wheels to take dependencies from")  # fmt: skip
    args = parser.parse_args()
    archive = build(args.out, args.find_links)
    size = archive.stat().st_size / (1024 * 1024)
    print(f"{archive} ({size:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
