"""``safeedge buffer stats | verify | export | rotate-key --config FILE``: inspect and hand over
the encrypted buffer.

``stats``, ``verify`` and ``export`` open the buffer read-only (:class:`buffer.StoreReader`): no
lock, no write, safe while the agent runs (each reads one consistent snapshot). ``rotate-key``
changes the key file and the database, so it needs the agent stopped: while the agent holds the
buffer it fails with exit 1 and says so (the agent also rotates by itself after 2**30 seals).

``export`` decrypts for an offline handover (e.g. a USB stick for the regulator): one record per
line (``jsonl``) or row (``csv``) with its id, stream, seq, creation time, delivery state and
decoded body (JSON bodies as JSON; anything else base64). ``--from``/``--to`` are inclusive and
each is either a seq (an integer; needs ``--stream``) or a UTC time (ISO 8601: ``2024-05-01``,
``2024-05-01T08:00:00Z``; a time without zone is UTC) compared with the record's creation time.
The output file is created with mode 0600: it holds plaintext.

``verify`` and ``export`` read a damaged database as far as it goes: when SQLite calls the
file corrupt they read it page by page without SQLite (:func:`buffer.salvage_file`), take
every record that still authenticates, and say what they skipped (pages that could not be
read, records that failed authentication); the exit code is then 1. ``--file`` points them
at another file than the configured one, e.g. a ``buffer.db.corrupt-<time>`` the agent moved
aside (its key file copy ``<file>.key`` is used when present).

Exit codes: 0 ok; 1 a record failed authentication or the database failed its check (verify,
export), or the buffer is busy/unreadable; 2 bad arguments; 78 bad config, key file or a
buffer that belongs to another gateway.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import msgspec

from agent.config import AgentConfig, ConfigError, load_config, resolved_paths
from buffer import (
    BufferCorruptError,
    BufferInUseError,
    BufferNeedsHumanError,
    Store,
    StoredRecord,
    StoreError,
    StoreReader,
    Stream,
    record_id,
    salvage_file,
)

__all__ = ["register"]

_EX_CONFIG = 78
_CSV_COLUMNS = (
    "id",
    "stream",
    "seq",
    "created_ms",
    "created",
    "state",
    "settled_ms",
    "reason",
    "key_id",
    "body",
    "error",
)


class _UsageError(Exception):
    """Bad command-line input (exit 2)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "buffer",
        help="inspect, verify, export or re-key the encrypted buffer",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    cmds = p.add_subparsers(dest="buffer_command", metavar="ACTION", required=True)
    for name, help_text in (
        ("stats", "record counts, bytes and counters per stream (read-only)"),
        ("verify", "authenticate every record and check the database (read-only)"),
        ("export", "decrypt records for an offline handover (read-only)"),
        ("rotate-key", "seal new records with a fresh key (the agent must be stopped)"),
    ):
        c = cmds.add_parser(name, help=help_text, description=help_text)
        c.add_argument("--config", required=True, type=Path, metavar="FILE", help="agent config")
        c.set_defaults(func=_run, action=name)
        if name in ("verify", "export"):
            c.add_argument(
                "--file",
                type=Path,
                metavar="DB",
                help="read this database file instead (e.g. one moved aside as corrupt)",
            )
        if name == "stats":
            c.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "export":
            c.add_argument("--stream", choices=[s.wire_name for s in Stream])
            c.add_argument("--from", dest="start", metavar="SEQ|TIME", help="inclusive start")
            c.add_argument("--to", dest="end", metavar="SEQ|TIME", help="inclusive end")
            c.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
            c.add_argument("--output", "-o", type=Path, metavar="FILE", help="default: stdout")


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return _EX_CONFIG
    try:
        if args.action == "rotate-key":
            return _rotate_key(cfg, args.config)
        paths = resolved_paths(cfg, args.config)
        path, key_file = paths.buffer_path, paths.buffer_key_file
        if getattr(args, "file", None) is not None:
            path = args.file
            copy = path.with_name(path.name + ".key")
            key_file = copy if copy.exists() else key_file
        done: set[tuple[Stream, int]] = set()
        try:
            with StoreReader.open(path=path, key_file=key_file, gateway_id=cfg.gateway.id) as rd:
                if args.action == "stats":
                    return _stats(rd, cfg, as_json=args.json)
                if args.action == "verify":
                    return _verify(rd)
                return _export(rd.records(**_bounds(args)), cfg, args, done)
        except BufferCorruptError as exc:
            if args.action == "stats":
                raise
            print(f"safeedge buffer: {exc}; reading it page by page", file=sys.stderr)
            return _salvaged(path, key_file, cfg, args, done)
    except _UsageError as exc:
        print(f"safeedge buffer: {exc}", file=sys.stderr)
        return 2
    except BufferNeedsHumanError as exc:
        print(f"safeedge buffer: {exc}", file=sys.stderr)
        return _EX_CONFIG
    except StoreError as exc:
        print(f"safeedge buffer: {exc}", file=sys.stderr)
        return 1


def _stats(reader: StoreReader, cfg: AgentConfig, *, as_json: bool) -> int:
    st = reader.stats(capacity_bytes=cfg.buffer.capacity_bytes)
    rows = {
        s.wire_name: {
            "undelivered": v.undelivered,
            "delivered": v.delivered,
            "dead": v.dead,
            "bytes": v.bytes,
            "last_seq": v.last_seq,
            "oldest_undelivered_ms": v.oldest_undelivered_ms,
            "evicted": v.evicted,
            "dead_total": v.dead_total,
            "quarantined": v.quarantined,
            "refused": v.refused,
            "refused_pending": v.refused_pending,
        }
        for s, v in sorted(st.streams.items())
    }
    if as_json:
        doc = {
            "streams": rows,
            "bytes": st.bytes,
            "capacity_bytes": st.capacity_bytes,
            "quarantine_rows": st.quarantine_rows,
            "active_key_id": st.active_key_id,
            "key_ids": list(st.key_ids),
        }
        print(json.dumps(doc, indent=2))
        return 0
    cols = ["undelivered", "delivered", "dead", "bytes", "last_seq", "evicted", "quarantined"]
    cols.append("refused")
    print(f"{'stream':<10}" + "".join(f"{c:>13}" for c in cols))
    for name, row in rows.items():
        print(f"{name:<10}" + "".join(f"{row[c]:>13}" for c in cols))
    pct = 100 * st.bytes / st.capacity_bytes
    print(f"total {st.bytes} of {st.capacity_bytes} bytes ({pct:.1f} %); ", end="")
    print(f"quarantined rows kept {st.quarantine_rows}; keys {list(st.key_ids)}")
    return 0


def _verify(reader: StoreReader) -> int:
    report = reader.verify()
    for stream, seq, why in report.failed[:20]:
        print(f"FAILED {stream.wire_name} seq {seq}: {why}", file=sys.stderr)
    checked = ", ".join(f"{n} {s.wire_name}" for s, n in sorted(report.checked.items()))
    integrity = "; ".join(report.integrity[:5])
    print(
        f"checked {checked}; {len(report.failed)} failed authentication; "
        f"{report.quarantine_rows} in quarantine; database check: {integrity}"
    )
    return 0 if report.ok else 1


def _salvaged(
    path: Path,
    key_file: Path,
    cfg: AgentConfig,
    args: argparse.Namespace,
    done: set[tuple[Stream, int]],
) -> int:
    """The damaged-file path of verify and export (see the module docstring)."""
    records, report = salvage_file(path=path, key_file=key_file, gateway_id=cfg.gateway.id)
    for stream, seq in report.failed[:20]:
        print(f"FAILED {stream.wire_name} seq {seq}: authentication failed", file=sys.stderr)
    print(
        f"damaged database: {report.pages_skipped} of {report.pages} pages could not be read "
        f"and were skipped; {report.found} records authenticate, {len(report.failed)} failed",
        file=sys.stderr,
    )
    if args.action == "export":
        bounds = _bounds(args)
        # Records already written to stdout before SQLite gave up are not repeated; a file
        # output is written again from the start, so it gets all of them.
        skip = done if args.output is None else set()
        wanted = [r for r in records if _within(r, bounds) and (r.stream, r.seq) not in skip]
        _export(iter(wanted), cfg, args, done)
    return 1


def _within(rec: StoredRecord, bounds: dict[str, Any]) -> bool:
    stream = bounds.get("stream")
    big = 2**63
    return (
        (stream is None or rec.stream is stream)
        and bounds.get("from_seq", 0) <= rec.seq <= bounds.get("to_seq", big)
        and bounds.get("from_ms", -big) <= rec.created_ms <= bounds.get("to_ms", big)
    )


def _bounds(args: argparse.Namespace) -> dict[str, Any]:
    if args.action != "export":
        return {}
    stream = None if args.stream is None else Stream[args.stream.upper()]
    bounds: dict[str, Any] = {"stream": stream}
    for label, text, seq_key, ms_key in (
        ("--from", args.start, "from_seq", "from_ms"),
        ("--to", args.end, "to_seq", "to_ms"),
    ):
        if text is None:
            continue
        if text.isdigit():
            if stream is None:
                raise _UsageError(f"{label} {text} is a seq: seqs are per stream, add --stream")
            bounds[seq_key] = int(text)
        else:
            bounds[ms_key] = _parse_time(label, text, end=label == "--to")
    return bounds


def _export(
    records: Iterator[StoredRecord],
    cfg: AgentConfig,
    args: argparse.Namespace,
    done: set[tuple[Stream, int]],
) -> int:
    gateway = cfg.gateway.id
    failed = written = 0
    try:
        with _output(args.output) as out:
            writer = csv.writer(out) if args.format == "csv" else None
            if writer is not None:
                writer.writerow(_CSV_COLUMNS)
            for rec in records:
                done.add((rec.stream, rec.seq))
                doc = _export_doc(gateway, rec)
                failed += rec.error is not None
                written += 1
                if writer is not None:
                    body = doc.get("body")
                    body_text = json.dumps(body) if "body" in doc else doc.get("body_base64")
                    writer.writerow(
                        [doc.get(c) if c != "body" else body_text for c in _CSV_COLUMNS]
                    )
                else:
                    out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            out.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly as cat does, exit 128 + SIGPIPE.
        # stdout now points at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    print(f"exported {written} records, {failed} failed authentication", file=sys.stderr)
    return 1 if failed else 0


def _export_doc(gateway: str, rec: StoredRecord) -> dict[str, object]:
    created = dt.datetime.fromtimestamp(rec.created_ms / 1000, tz=dt.UTC)
    doc: dict[str, object] = {
        "id": record_id(gateway, rec.stream, rec.seq),
        "stream": rec.stream.wire_name,
        "seq": rec.seq,
        "created_ms": rec.created_ms,
        "created": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "state": rec.state,
        "settled_ms": rec.settled_ms,
        "reason": rec.reason,
        "key_id": rec.key_id,
        "error": rec.error,
    }
    if rec.payload is not None:
        try:
            doc["body"] = msgspec.json.decode(rec.payload)
        except msgspec.DecodeError:
            doc["body_base64"] = base64.b64encode(rec.payload).decode()
    return doc


def _parse_time(label: str, text: str, *, end: bool) -> int:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise _UsageError(
            f"{label} {text!r} is neither a seq nor an ISO 8601 time (e.g. 2024-05-01T08:00Z)"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    ms = int(when.timestamp() * 1000)
    if end and len(text) == 10:  # a bare date as --to means the whole day
        ms += 86_400_000 - 1
    return ms


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise _UsageError(f"{path}: cannot write the export: {exc}") from exc
    with open(fd, "w", encoding="utf-8", newline="") as out:
        yield out


def _rotate_key(cfg: AgentConfig, config_path: Path) -> int:
    paths = resolved_paths(cfg, config_path)
    buf = cfg.buffer
    try:
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
    except BufferInUseError as exc:
        raise BufferInUseError(
            f"{exc}: the agent is running; stop it (systemctl stop safeedge), run rotate-key, "
            "start it again"
        ) from exc
    with store:
        old = store.stats().active_key_id
        new = store.rotate_key()
        kept = [k for k in store.stats().key_ids if k != new]
    print(
        f"new records are sealed with key {new} (was {old}); kept keys {kept} until their "
        f"records are gone; back up {paths.buffer_key_file}"
    )
    return 0
