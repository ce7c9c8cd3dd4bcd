"""Property: a config ``check-config`` accepts builds every component (issue 9).

Each example starts from ``examples/reference.toml`` or ``examples/tank-farm.toml`` and mutates
one to three values (numbers to nan/inf/0/negative/huge/tiny, strings to empty/NUL/'#'/'+'/long,
paths to a directory or a missing file, keys removed, lists emptied, types swapped). Every mutant
is either rejected by :func:`agent.config.load_config` with ``check_files=True`` (what
``safeedge run`` and ``safeedge check-config --files`` do) with a key path on every issue, or it
builds: :class:`agent.pipeline.Pipeline` (the tag table, ``RuleEngine``, every device of
``drivers.build_devices``, the batcher, the report-by-exception filter, the ``Uplink`` with its
TLS context), ``buffer.Store.open`` on the resolved paths, the ``Forwarder`` and the command
keys and replay store. Nothing connects: devices and the
uplink are only constructed (no network I/O); the store is a real SQLite file in a temp dir.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.commands import ReplayStore, load_public_keys
from agent.config import ConfigError, load_config, resolved_paths
from agent.forwarder import Forwarder
from agent.pipeline import Pipeline
from buffer import Store
from tests.support.mosquitto import _Pki

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NUMBERS: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    0,
    0.0,
    -1,
    -1.5,
    1e308,
    -1e308,
    1e-300,
    2**62,
    65536,
    3,
]
STRINGS = ["", "\x00", "#", "+", "a/#", "/", " ", "x" * 5000, "bad\x00host", "tags*"]

_PKI_DIR = Path(tempfile.mkdtemp(prefix="safeedge-mutants-pki-"))
_PKI = _Pki(_PKI_DIR)
_CLIENT = _PKI.issue("gateway")
_PASSWORD = _PKI_DIR / "password"
_PASSWORD.write_text("secret\n")
_PASSWORD.chmod(0o600)  # the agent refuses a password file readable by others


def _base(name: str) -> dict[str, Any]:
    """The example as a tree, its files pointing at real ones (a CA, a client cert, a password)."""
    raw = tomllib.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    raw["gateway"]["data_dir"] = "data"  # relative: inside each mutant's temp dir
    up = raw.setdefault("uplink", {})
    if "tls" in up:
        up["tls"] = {
            "ca_file": str(_PKI.ca_file),
            "cert_file": str(_CLIENT.cert_file),
            "key_file": str(_CLIENT.key_file),
        }
    if "password_file" in up:
        up["password_file"] = str(_PASSWORD)
    return raw


BASES = {name: _base(name) for name in ("reference.toml", "tank-farm.toml")}


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of the tree, tables and arrays included (they can be removed/emptied)."""
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))


def _toml(value: Any) -> str:
    """One TOML value, inline (tables as inline tables): enough to write any mutant."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes (ASCII)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _document(raw: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in raw.items())


@st.composite
def mutants(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(BASES)))
    raw = copy.deepcopy(BASES[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_leaves(raw))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = raw
        for seg in path[:-1]:
            parent = parent[seg]
        old = parent[path[-1]]
        key = next((s for s in reversed(path) if isinstance(s, str)), "")
        choices: list[Any] = ["<remove>", "x", 1]
        if path[:2] == ("gateway", "data_dir") or path == ("gateway",):
            # Kept inside the temp dir: the default or "/" would write a store outside it.
            choices = ["", "x", "a-directory", "<missing>", "x" * 300, "\x00"]
        elif isinstance(old, bool):
            choices += [not old]
        elif isinstance(old, int | float):
            choices += [*NUMBERS, -old, old * 1000]
        elif isinstance(old, str):
            choices += [*STRINGS, old + "#", old * 2]
            if key.endswith(("file", "path", "dir")):
                choices += ["<dir>", "<missing>"]
        elif isinstance(old, list):
            choices += [[], old[:1], old + old[:1], old[1:]]
        new = draw(st.sampled_from(choices))
        if new == "<remove>":
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    return name, raw


def _build(config: Path) -> None:
    """Build every component of the accepted config (no network I/O)."""
    cfg = load_config(config, check_files=True)
    paths = resolved_paths(cfg, config)
    password = None
    if paths.password_file is not None:
        password = paths.password_file.read_text(encoding="utf-8").strip()
    pipeline = Pipeline(cfg, paths, password=password)
    assert (pipeline.uplink is None) == (not cfg.uplink.enabled)
    buf = cfg.buffer
    store = Store.open(
        path=paths.buffer_path,
        key_file=paths.buffer_key_file,
        gateway_id=cfg.gateway.id,
        cipher=buf.cipher,
        retention_days=buf.retention_days,
        capacity_bytes=buf.capacity_bytes,
        stream_limits=buf.stream_limits(),
        reserve_bytes=buf.reserve_bytes,
    )
    try:
        if pipeline.uplink is not None:
            Forwarder(
                store=store,
                uplink=pipeline.uplink,
                site=cfg.gateway.site,
                gateway=cfg.gateway.id,
                backfill_after_s=cfg.uplink.backfill_after_s,
                max_inflight=cfg.uplink.max_inflight,
                clock_ms=lambda: 0,
                drain_rate=cfg.uplink.drain_rate,
            )
        load_public_keys(cfg.commands.trusted_keys)
        ReplayStore(
            paths.data_dir / "commands_seen.json",
            max_ids=cfg.commands.seen_ids_max,
            clock_ms=lambda: 0,
        )
    finally:
        store.close()


@pytest.mark.parametrize("name", sorted(BASES))
def test_the_unmutated_examples_build(name: str, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(_document(BASES[name]), encoding="utf-8")
    _build(config)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutants())
def test_every_mutant_is_rejected_with_a_key_path_or_builds(mutant: tuple[str, Any]) -> None:
    _name, raw = mutant
    with tempfile.TemporaryDirectory(prefix="safeedge-mutant-") as tmp:
        site = Path(tmp)
        (site / "a-directory").mkdir()
        text = _document(raw).replace('"<dir>"', json.dumps(str(site / "a-directory")))
        text = text.replace('"<missing>"', json.dumps("missing/file"))
        config = site / "agent.toml"
        config.write_text(text, encoding="utf-8")
        try:
            cfg = load_config(config, check_files=True)
        except ConfigError as exc:
            issues = exc.issues
        else:
            issues = []
        if issues:
            assert all(issue.path for issue in issues), issues
            return
        for name in (cfg.buffer.path, cfg.buffer.key_file):  # the store stays in the temp dir
            assert Path(name).is_relative_to(site), name
        _build(config)
