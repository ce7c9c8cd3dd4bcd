"""The JSON Schemas (draft 2020-12) of the wire contract, shipped as package data.

One file per payload: ``envelope``, ``telemetry``, ``alarm``, ``event``, ``state``, ``meta``,
``cmd``, ``cmd_result`` (design/UPLINK.md explains them; docs/uplink.md and docs/asyncapi.yaml
link here).

Why they live in ``agent`` and not in ``central``: the contract is what the agent promises to
send (``agent.codec`` produces it) and what both sides rely on. ``central`` sits above
``agent`` in the import layers, so it can load them from here; had they gone to ``central``,
the agent and its tests could not reach their own contract without breaking the layers.
Only the files and a plain JSON loader live here: validating needs ``jsonschema``, which the
agent does not depend on (see ``central.schema``).

They are read with :mod:`importlib.resources`, never from the source tree, so they resolve
the same way in an editable checkout and in an installed wheel.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final

__all__ = ["SCHEMA_NAMES", "SchemaLoadError", "load_schemas", "schema_files"]

SCHEMA_NAMES: Final = frozenset(
    ("envelope", "telemetry", "alarm", "event", "state", "meta", "cmd", "cmd_result")
)
"""Every schema the contract has; :func:`load_schemas` fails when one is missing."""


class SchemaLoadError(RuntimeError):
    """A schema file is missing or is not JSON (a broken install or checkout)."""


def schema_files() -> Traversable:
    """The folder holding the ``*.json`` files (inside the installed package)."""
    return resources.files(__name__)


def load_schemas(folder: Traversable | None = None) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` in ``folder`` (default: the shipped ones), by file stem.

    Raises :class:`SchemaLoadError` naming the folder and file when one cannot be read or
    parsed, or when one of :data:`SCHEMA_NAMES` is absent.
    """
    where = schema_files() if folder is None else folder
    docs: dict[str, dict[str, Any]] = {}
    try:
        entries = sorted(where.iterdir(), key=lambda e: e.name)
    except OSError as exc:
        raise SchemaLoadError(f"cannot list the schemas in {where}: {exc}") from exc
    for entry in entries:
        if not entry.name.endswith(".json"):
            continue
        try:
            doc = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaLoadError(f"cannot read schema {entry.name} in {where}: {exc}") from exc
        if not isinstance(doc, dict):
            raise SchemaLoadError(f"schema {entry.name} in {where} is not a JSON object")
        docs[entry.name.removesuffix(".json")] = doc
    missing = SCHEMA_NAMES - docs.keys()
    if missing:
        raise SchemaLoadError(f"schemas {sorted(missing)} missing in {where}")
    return docs
