"""The offline bundle: ``make bundle`` and ``install.sh --from-bundle`` with no package index.

The bundle is built once for the module (pip may use its cache or an index to *build* it, as
on the developer's machine); installing from it must need nothing but the archive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
INSTALL = REPO / "systemd" / "install.sh"
CHECK = REPO / "tests" / "support" / "install_check.py"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, str(REPO / "systemd" / "make_bundle.py"), "--out",
                           str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [archive] = out.glob("safeedge-bundle-*.tar.gz")
    return archive


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}


def test_the_bundle_holds_every_wheel_pinned_by_hash_and_the_unit_install_script_and_docs(
    bundle: Path,
) -> None:
    with tarfile.open(bundle) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for need in ("install.sh", "safeedge.service", "requirements.txt", "SHA256SUMS", "TARGET",
                 "docs/commissioning.md", "docs/zh/commissioning.md",
                 "examples/reference.toml"):  # fmt: skip
        assert need in names, need
    wheels = {n.split("/")[1].split("-")[0].lower() for n in names if n.startswith("wheels/")}
    for dist in ("safeedge", "numba", "llvmlite", "numpy", "pymodbus", "paho_mqtt", "rich",
                 "cryptography", "msgspec", "sqlite_utils", "pyserial"):  # fmt: skip
        assert dist in wheels, dist


def test_dry_run_prints_an_index_free_hash_checked_install_and_changes_nothing(
    bundle: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    done = subprocess.run(["bash", str(INSTALL), "--from-bundle", str(bundle), "--prefix",
                           str(prefix), "--dry-run"], capture_output=True, text=True,
                          timeout=60, env=offline_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--no-index" in done.stdout and "--require-hashes" in done.stdout
    assert f"s#/opt/safeedge#{prefix}#g" in done.stdout
    assert not prefix.exists()


def test_a_bundle_with_a_changed_file_is_refused_before_anything_is_installed(
    bundle: Path, tmp_path: Path
) -> None:
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "b", filter="data")
    [root] = (tmp_path / "b").iterdir()
    (root / "safeedge.service").write_text("[Service]\nExecStart=/bin/sh -c evil\n")
    prefix = tmp_path / "opt"
    done = subprocess.run(["bash", str(INSTALL), "--from-bundle", str(root), "--prefix",
                           str(prefix), "--no-system"], capture_output=True, text=True,
                          timeout=60, env=offline_env())  # fmt: skip
    assert done.returncode == 1 and "SHA256SUMS" in done.stderr
    assert not prefix.exists()


@pytest.mark.slow
def test_install_from_the_bundle_into_a_fresh_venv_with_the_index_disabled(
    bundle: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    done = subprocess.run(["bash", str(INSTALL), "--from-bundle", str(bundle), "--prefix",
                           str(prefix), "--no-system"], capture_output=True, text=True,
                          timeout=300, env=offline_env(), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    exe = prefix / ".venv" / "bin"
    version = subprocess.run([str(exe / "safeedge"), "--version"], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert version.stdout.strip() == "safeedge 0.1.0"
    # every SafeEdge package resolves inside the install, to no other distribution
    site = next((prefix / ".venv" / "lib").glob("python3.*/site-packages"))
    check = subprocess.run([str(exe / "python"), str(CHECK), str(site)], capture_output=True,
                           text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stdout + check.stderr
    kit = subprocess.run([str(exe / "safeedge"), "commission", "--help"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert kit.returncode == 0 and "--installer" in kit.stdout
    assert (prefix / "docs" / "commissioning.md").exists()
    shutil.rmtree(prefix)
