"""The wire contract's schemas as package data (agent/schemas) and the validator over them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import agent
from agent.schemas import SCHEMA_NAMES, SchemaLoadError, load_schemas, schema_files
from central.schema import SchemaValidator


def test_the_shipped_schemas_are_read_from_the_package_not_from_docs() -> None:
    folder = Path(str(schema_files()))
    assert folder == Path(agent.__file__).parent / "schemas"
    docs = load_schemas()
    assert docs.keys() == SCHEMA_NAMES
    for name, doc in docs.items():
        assert doc["$id"] == f"https://safeedge.example/schemas/v1/{name}.json"


def copy_schemas(to: Path) -> Path:
    to.mkdir()
    for name in SCHEMA_NAMES:
        shutil.copy(Path(str(schema_files())) / f"{name}.json", to / f"{name}.json")
    return to


def test_a_missing_schema_is_named_with_its_folder(tmp_path: Path) -> None:
    folder = copy_schemas(tmp_path / "schemas")
    (folder / "meta.json").unlink()
    with pytest.raises(SchemaLoadError, match=r"schemas \['meta'\] missing in .*schemas"):
        load_schemas(folder)
    with pytest.raises(RuntimeError, match=r"\['meta'\] missing"):
        SchemaValidator(folder)


def test_a_schema_that_is_not_json_is_named(tmp_path: Path) -> None:
    folder = copy_schemas(tmp_path / "schemas")
    (folder / "alarm.json").write_text("{not json")
    with pytest.raises(SchemaLoadError, match=r"cannot read schema alarm\.json in .*schemas"):
        load_schemas(folder)
    (folder / "alarm.json").write_text("[]")
    with pytest.raises(SchemaLoadError, match=r"alarm\.json .* is not a JSON object"):
        load_schemas(folder)


def test_a_validator_over_another_folder_uses_that_folders_rules(tmp_path: Path) -> None:
    folder = copy_schemas(tmp_path / "schemas")
    doc = json.loads((folder / "cmd_result.json").read_text())
    doc["properties"]["status"]["enum"].append("maybe")
    (folder / "cmd_result.json").write_text(json.dumps(doc))
    result = b'{"id": "x", "status": "maybe", "detail": "", "ts": 1}'
    assert SchemaValidator(folder).errors("cmd/result", result) == []
    assert SchemaValidator().errors("cmd/result", result) != []
