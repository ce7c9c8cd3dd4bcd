"""Checking received payloads against the wire contract's JSON Schemas.

The schemas are the agent's package data (``agent.schemas``, loaded with importlib.resources),
so validation works the same from a checkout and from an installed wheel. Validating needs
``jsonschema`` (``pip install 'safeedge[central]'``, also in the dev extras); the agent itself
never needs it.
"""

from __future__ import annotations

import base64
import binascii
import json
from importlib.resources.abc import Traversable
from typing import Any, Final

from agent.schemas import SchemaLoadError, load_schemas
from agent.uplink.encoding import PayloadError, decode_payload

__all__ = ["SchemaValidator"]


class SchemaValidator:
    """Checks payloads against the shipped schemas (``agent.schemas``) with ``jsonschema``.

    :meth:`errors` returns human-readable violations (``path: message``), empty when valid.
    Raises RuntimeError at construction when ``jsonschema`` is not installed or the schema
    files cannot be read (the message says which).
    """

    KINDS: Final = ("telemetry", "alarm", "event", "state", "meta", "cmd", "cmd/result")

    def __init__(self, directory: Traversable | None = None) -> None:
        """``directory``: another folder of schemas (default: the ones shipped with the agent)."""
        try:
            import jsonschema  # type: ignore[import-untyped]
        except ImportError as exc:
            raise RuntimeError(
                "validation needs the jsonschema package (pip install 'safeedge[central]')"
            ) from exc
        try:
            docs = load_schemas(directory)
        except SchemaLoadError as exc:
            raise RuntimeError(str(exc)) from exc
        v = jsonschema.Draft202012Validator
        self._v = {name: v(doc) for name, doc in docs.items()}
        self._cmd_payload = v(docs["cmd"]["$defs"]["payload"])
        # Telemetry bodies by shape, so a violation is reported at its path, not as "not
        # valid under any of the given schemas" (the shape follows from v and the keys).
        self._telemetry = {name: v(d) for name, d in docs["telemetry"]["$defs"].items()}

    def errors(self, kind: str, payload: bytes) -> list[str]:
        """Violations of ``payload`` on topic ``kind`` (``R/{kind}``); [] when valid. A zlib
        payload of an enveloped stream is inflated first (design/UPLINK.md "Compression")."""
        if kind in ("telemetry", "alarm", "event"):
            try:
                payload = decode_payload(payload)
            except PayloadError as exc:
                return [f"not JSON nor zlib JSON: {exc}"]
        try:
            doc = json.loads(payload)
        except ValueError as exc:
            return [f"not JSON: {exc}"]
        if kind in ("telemetry", "alarm", "event"):
            out = self._check("envelope", doc)
            if not out and isinstance(doc, dict):
                if kind == "telemetry":
                    body = doc["body"]
                    shape = "points" if doc["v"] == 1 else "stats" if "stats" in body else "groups"
                    return self._check_with(self._telemetry[shape], body, "body")
                out = self._check(kind, doc["body"], "body")
            return out
        if kind == "cmd":
            out = self._check("cmd", doc)
            if not out:
                try:
                    inner = json.loads(base64.b64decode(doc["payload"], validate=True))
                except (binascii.Error, ValueError) as exc:
                    return [f"payload: not base64 JSON: {exc}"]
                out = self._check_with(self._cmd_payload, inner, "payload")
            return out
        name = kind.replace("/", "_")
        return self._check(name, doc) if name in self._v else []

    def _check(self, name: str, doc: object, where: str = "") -> list[str]:
        return self._check_with(self._v[name], doc, where)

    @staticmethod
    def _check_with(validator: Any, doc: object, where: str) -> list[str]:
        out = []
        for err in validator.iter_errors(doc):
            path = "/".join(str(p) for p in err.absolute_path)
            at = "/".join(x for x in (where, path) if x) or "(root)"
            out.append(f"{at}: {err.message}")
        return out
