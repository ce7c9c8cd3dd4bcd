"""The command line loads only the module of the command being run."""

from __future__ import annotations

import subprocess
import sys

ABOVE_AGENT = ("central", "provisioning")


def _loaded_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from agent.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split()[-1000:])


def test_the_daemon_does_not_import_the_platform_or_installer_tools() -> None:
    loaded = _loaded_after(["run", "--help"])
    assert "agent" in loaded
    assert not loaded & {*ABOVE_AGENT, "numba", "llvmlite", "jsonschema"}


def test_a_command_contributed_by_an_entry_point_still_runs() -> None:
    loaded = _loaded_after(["listen", "--help"])
    assert "central" in loaded
    assert "provisioning" not in loaded


def test_help_lists_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for name in ("run", "check-config", "rules", "buffer", "listen", "sign-command", "demo"):
        assert name in done.stdout
