"""Fuzzer: 600 byte- and text-level mutants of the example configs through ``check-config``.

In-process (``agent.cli.main``, no subprocess per mutant). Mutations: truncation, byte flips,
inserted control characters / NUL / ANSI escapes / newlines inside strings, huge and extreme
numbers, deep nested arrays and inline tables, duplicated and unknown keys, invalid UTF-8,
Unicode separators. Property: exit 0 (with the one summary line) or 78 (every stderr line
starts with the file name, then the count line); never an exception; nothing from the file
reaches the terminal unescaped (no control character, no ESC, no Unicode line separator).
"""

from __future__ import annotations

import contextlib
import io
import random
import re
from pathlib import Path

import pytest

from agent.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INSERTS = [
    "\x00", "\x1b[2J", "\n", "\r", "\u2028", "\u202e", "\x7f", "\ud800", "\\u0000",
    '"', "[[", "]]", "{", "=", "#", "'''", '"""', "\t", "\ufeff", "𝕊",
]  # fmt: skip
VALUES = [
    "1" * 400, "-" + "9" * 30, "1e400", "nan", "inf", "-inf", "0x7fffffffffffffff",
    "9223372036854775808", "1979-05-27T07:32:00Z", "[" * 300 + "]" * 300,
    "{a = " * 200 + "1" + "}" * 200, '"x\\u001b[31mred"', '"a\\nFAKE LINE"', "true", "[]",
    '"' + "x" * 100_000 + '"',
]  # fmt: skip
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\ud800-\udfff]")


def _mutate(rng: random.Random, text: str) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return text.encode()[: rng.randrange(len(text))]
    if kind == 1:
        data = bytearray(text.encode())
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    if kind == 2:  # something hostile inside a string value
        quoted = [j for j, line in enumerate(lines) if '"' in line and "=" in line]
        j = rng.choice(quoted)
        k = lines[j].index('"') + 1
        lines[j] = lines[j][:k] + rng.choice(INSERTS) + lines[j][k:]
    elif kind == 3:  # a value replaced
        assigned = [j for j, line in enumerate(lines) if " = " in line]
        j = rng.choice(assigned)
        lines[j] = lines[j].split(" = ", 1)[0] + " = " + rng.choice(VALUES)
    elif kind == 4:  # an unknown or duplicated key, maybe with a hostile name
        name = rng.choice(["x", "bad\x1bkey", '"evil\\nkey"', lines[i].split(" = ")[0].strip()])
        lines.insert(i, f"{name or 'y'} = 1")
    elif kind == 5:  # a line removed or duplicated
        if rng.random() < 0.5:
            del lines[i]
        else:
            lines.insert(i, lines[i])
    elif kind == 6:
        lines.insert(i, rng.choice(INSERTS) * rng.randint(1, 50))
    else:
        return text.encode().replace(b"=", rng.choice([b"==", b"\xff=", b"= \xc0\xaf"]), 1)
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("example", ["reference.toml", "tank-farm.toml"])
def test_300_mutants_of_each_example_fail_cleanly_or_pass(example: str, tmp_path: Path) -> None:
    source = (EXAMPLES / example).read_text(encoding="utf-8")
    for sub in ("certs", "secrets"):
        src = EXAMPLES / sub
        if src.is_dir():
            (tmp_path / sub).mkdir()
    rng = random.Random(example)
    codes = {0: 0, 78: 0}
    for n in range(300):
        path = tmp_path / f"m{n}.toml"
        path.write_bytes(_mutate(rng, source))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check-config", str(path)])
        assert code in codes, (code, err.getvalue()[-500:])
        codes[code] += 1
        text = out.getvalue() + err.getvalue()
        assert not _UNSAFE.search(text), (n, text[:300])
        assert "Traceback" not in text
        if code == 78:
            lines = err.getvalue().splitlines()
            assert lines[-1].startswith(f"safeedge: {path}: "), lines[-1]
            assert all(line.startswith(f"{path}") for line in lines[:-1]), lines[:3]
        else:
            assert out.getvalue().startswith(f"{path}: ok: ")
        path.unlink()
    assert codes[78] > 150  # the mutants do break things
