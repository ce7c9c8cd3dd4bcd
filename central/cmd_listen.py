"""``safeedge listen``: print what gateways send to the platform, one line per message.

Readable lines (default), alarms first-word prominent::

    ALARM  GT-102 high RAISE level 1 (major) value 25.4 limit 25  [S1/G1 #1042]
    DATA   3 points: GT-101=20.5 GT-102=null(bad_comm) GT-103=1.2  [S1/G1 #7]
    GAP    telemetry seq 5..7 missing (3)  [S1/G1]

or, with ``--json``, one JSON object per message (the body verbatim). With ``--validate`` each
message is checked against the JSON Schemas: ``INVALID`` lines (or ``schema_errors``) follow it.
Runs until interrupted or until ``--count`` messages were printed. Exit 0, or 1 when the broker
cannot be reached (or validation is asked for without jsonschema or the schema files).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import msgspec

from agent.codec import Alarm, Point, State
from agent.codec_v2 import StatRow
from agent.config import TlsConfig
from central.listen import Listener, ListenerError, Message

__all__ = ["format_json", "format_lines", "main", "register", "run"]

_MAX_POINTS_SHOWN = 6


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("listen", help="print what gateways publish (the platform side in small)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="safeedge/v1")
    p.add_argument("--site", default=None, help="only this site (default: all)")
    p.add_argument("--gateway", default=None, help="only this gateway (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--validate",
        action="store_true",
        help="check every message against the JSON Schemas (agent/schemas); print violations",
    )
    p.add_argument(
        "--share",
        default=None,
        metavar="GROUP",
        help="join the MQTT 5 shared subscription $share/GROUP/...: listeners of one group "
        "split the traffic (de-dup and gaps are then per listener; see docs/uplink.md)",
    )
    p.add_argument("--count", type=int, default=0, help="exit after N messages (0: never)")
    p.add_argument("--username", default=None)
    p.add_argument("--password-file", type=Path, default=None)
    p.add_argument("--ca-file", default=None, help="enable TLS with this CA")
    p.add_argument("--cert-file", default=None)
    p.add_argument("--key-file", default=None)
    p.set_defaults(func=run)


def _num(value: float | None) -> str:
    return "null" if value is None else f"{value:g}"


def _where(m: Message) -> str:
    seq = f" #{m.envelope.seq}" if m.envelope is not None else ""
    flags = "".join(
        f" {flag}"
        for flag, on in (
            ("backfill", m.envelope is not None and m.envelope.backfill),
            ("late", m.late),
        )
        if on
    )
    return f"  [{m.site}/{m.gateway}{seq}{flags}]"


def _alarm(a: Alarm) -> str:
    words = [f"ALARM  {a.tag} {a.alarm} {a.event.upper()} level {a.level} ({a.severity})"]
    if a.event != "ack":
        words.append(f"value {_num(a.value)}")
    for key, item in a.extra.items():
        words.append(f"{key} {_num(item) if isinstance(item, int | float) else item}")
    return " ".join(words)


def _points(points: list[Point]) -> str:
    shown = [
        f"{p.tag}={_num(p.value)}" + (f"({p.quality})" if p.quality else "")
        for p in points[:_MAX_POINTS_SHOWN]
    ]
    more = f" +{len(points) - _MAX_POINTS_SHOWN} more" if len(points) > _MAX_POINTS_SHOWN else ""
    return f"DATA   {len(points)} points: {' '.join(shown)}{more}"


def _stats(window_ms: int, rows: list[StatRow]) -> str:
    shown = [
        f"{r.tag}[n={r.samples} min={_num(r.min)} max={_num(r.max)} mean={_num(r.mean)}"
        + (f" bad={r.bad}]" if r.bad else "]")
        for r in rows[:_MAX_POINTS_SHOWN]
    ]
    more = f" +{len(rows) - _MAX_POINTS_SHOWN} more" if len(rows) > _MAX_POINTS_SHOWN else ""
    return f"STATS  {len(rows)} rows / {window_ms // 1000} s: {' '.join(shown)}{more}"


def format_lines(m: Message) -> list[str]:
    """The readable lines for one message (a GAP line precedes the message that revealed it)."""
    out: list[str] = []
    if m.gap is not None:
        g = m.gap
        lost = f", {g.accounted} reported lost by the gateway" if g.accounted else ""
        out.append(f"GAP    {g.stream} seq {g.first}..{g.last} missing ({g.missing}{lost})  "
                   f"[{m.site}/{m.gateway}]")  # fmt: skip
    body: Any = m.body
    if m.error is not None:
        line = f"BAD    {m.topic}: {m.error}"
    elif isinstance(body, Alarm):
        line = _alarm(body) + _where(m)
    elif m.kind == "telemetry" and isinstance(body, list):
        line = _points(body) + _where(m)
    elif m.kind == "telemetry" and isinstance(body, tuple):
        line = _stats(*body) + _where(m)
    elif m.kind == "event" and isinstance(body, dict):
        fields = " ".join(f"{k}={v}" for k, v in body.items() if k not in ("kind", "ts"))
        line = f"EVENT  {body['kind']} {fields}".rstrip() + _where(m)
    elif isinstance(body, State):
        status = "ONLINE " if body.online else "OFFLINE"
        line = f"STATE  {status} session {body.session} agent {body.agent}" + _where(m)
    elif m.kind == "meta" and isinstance(body, dict):
        tags, devices = len(body.get("tags") or ()), len(body.get("devices") or ())
        line = f"META   {tags} tags, {devices} devices" + _where(m)
    else:
        text = m.payload[:160].decode(errors="replace")
        line = f"{m.kind.upper().replace('/', '_'):<6} {text}" + _where(m)
    out.append(line)
    out.extend(f"INVALID {m.kind}: {problem}" for problem in m.schema_errors)
    return out


def format_json(m: Message) -> str:
    """One JSON object: topic parts, envelope fields, sequence findings, body verbatim."""
    env = m.envelope
    doc: dict[str, Any] = {"topic": m.topic, "site": m.site, "gw": m.gateway, "kind": m.kind}
    if env is not None:
        doc |= {"v": env.v, "seq": env.seq, "id": env.id, "ts": env.ts, "backfill": env.backfill}
        if m.encoding != "json":
            doc["encoding"] = m.encoding
    doc |= {"retained": m.retained, "late": m.late}
    doc["gap"] = [m.gap.first, m.gap.last] if m.gap is not None else None
    if m.schema_errors:
        doc["schema_errors"] = list(m.schema_errors)
    if m.error is not None:
        doc["error"] = m.error
        doc["payload"] = m.payload.decode(errors="replace")
    elif env is not None:
        doc["body"] = env.body
    elif m.payload:
        doc["body"] = (
            msgspec.Raw(m.payload) if m.body is not None else m.payload.decode(errors="replace")
        )
    return msgspec.json.encode(doc).decode()


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text().strip()
        except OSError as exc:
            print(f"safeedge listen: --password-file: {exc}", file=sys.stderr)
            return 2
    tls = None
    if args.ca_file is not None:
        tls = TlsConfig(ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    done = threading.Event()
    printed = 0
    lock = threading.Lock()

    def on_message(m: Message) -> None:
        nonlocal printed
        lines = [format_json(m)] if args.json else format_lines(m)
        with lock:
            if done.is_set():
                return
            for line in lines:
                print(line, file=out, flush=True)
            printed += 1
            if args.count and printed >= args.count:
                done.set()

    try:
        listener = Listener(
            host=args.host,
            port=args.port,
            prefix=args.prefix,
            site=args.site,
            gateway=args.gateway,
            username=args.username,
            password=password,
            tls=tls,
            on_message=on_message,
            validate=args.validate,
            share=args.share,
        )
        listener.start()
    except (
        ListenerError,
        OSError,
        RuntimeError,
        ValueError,
    ) as exc:  # unreadable TLS files, no schemas
        print(f"safeedge listen: {exc}", file=sys.stderr)
        return 1
    old = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
        signal.signal(signal.SIGTERM, old)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``listen`` on its own (``python -m central.cmd_listen``), without the CLI."""
    parser = argparse.ArgumentParser(prog="safeedge")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["listen", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
