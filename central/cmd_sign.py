"""``safeedge sign-command``: the platform's side of signed commands (design/UPLINK.md).

Two actions::

    safeedge sign-command keygen --kid platform-2026 --out-dir keys/
        → keys/platform-2026.key (PKCS#8 PEM, mode 0600: keep it on the platform)
          keys/platform-2026.pub (base64 raw public key) and the [commands] line to paste
    safeedge sign-command sign --key keys/platform-2026.key --kid platform-2026 \\
            --gw GW1 --cmd ack_alarm --args '{"tag": "GT-102", "user": "li.wei"}'
        → the signed R/cmd message on stdout; with --publish --site S1 it is also published to
          the broker, and with --wait S the gateway's R/cmd/result answer is printed.

A command JSON may be given instead of --gw/--cmd/--args (``--json FILE``, ``-`` for stdin):
``{"gw", "cmd", "args"}`` with optional ``id`` (default: a new uuid4) and ``ts`` (default: now).

Exit codes: 0 done (with --wait: the answer arrived; its status is printed), 1 broker
unreachable or no answer in time, 2 bad usage or unreadable key / JSON.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import msgspec
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.codec import root_topic
from agent.commands import sign_command

__all__ = ["build_payload", "keygen", "load_private_key", "publish_command", "register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sign-command", help="platform side: make signing keys, sign commands")
    actions = p.add_subparsers(dest="action", required=True)
    k = actions.add_parser("keygen", help="create an Ed25519 key pair")
    k.add_argument("--kid", required=True, help="key id, e.g. platform-2026")
    k.add_argument("--out-dir", type=Path, default=Path())
    s = actions.add_parser("sign", help="sign one command (and optionally publish it)")
    s.add_argument("--key", type=Path, required=True, help="private key file from keygen")
    s.add_argument("--kid", required=True)
    s.add_argument("--json", default=None, help="command JSON file ('-': stdin)")
    s.add_argument("--gw", default=None)
    s.add_argument("--cmd", default=None, help="ack_alarm, rebirth, resend or ping")
    s.add_argument("--args", default="{}", help="JSON object of the command's arguments")
    s.add_argument("--id", default=None, help="command id (default: a new uuid4)")
    s.add_argument("--ts", type=int, default=None, help="epoch ms (default: now)")
    s.add_argument("--publish", action="store_true", help="publish to {prefix}/{site}/{gw}/cmd")
    s.add_argument("--site", default=None)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=1883)
    s.add_argument("--prefix", default="safeedge/v1")
    s.add_argument("--wait", type=float, default=0.0, help="seconds to wait for cmd/result")
    p.set_defaults(func=run)


def keygen(kid: str, out_dir: Path) -> tuple[Path, str]:
    """Write ``{kid}.key`` (0600) and ``{kid}.pub``; return the key path and the public key.

    Refuses (FileExistsError) to overwrite an existing private key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    path = out_dir / f"{kid}.key"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    (out_dir / f"{kid}.pub").write_text(public + "\n")
    return path, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Raises OSError (unreadable), ValueError (not a PEM key) or TypeError (not Ed25519)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"{path} is not an Ed25519 private key")
    return key


def build_payload(
    doc: Any, *, command_id: str | None = None, ts_ms: int | None = None
) -> dict[str, Any]:
    """``{"id", "ts", "gw", "cmd", "args"}`` from a partial command (id and ts filled in).

    Raises TypeError for a document that is not an object with string ``gw`` and ``cmd``."""
    if not isinstance(doc, dict):
        raise TypeError("a command is a JSON object")
    for need in ("gw", "cmd"):
        if not isinstance(doc.get(need), str):
            raise TypeError(f"the command needs a string {need!r}")
    return {
        "id": command_id or doc.get("id") or str(uuid.uuid4()),
        "ts": ts_ms if ts_ms is not None else doc.get("ts", time.time_ns() // 1_000_000),
        "gw": doc["gw"],
        "cmd": doc["cmd"],
        "args": doc.get("args", {}),
    }


def publish_command(
    *, host: str, port: int, root: str, message: bytes, wait_s: float = 0.0
) -> bytes | None:
    """Publish ``message`` to ``{root}/cmd`` (QoS 1) and, with ``wait_s``, return the first
    ``{root}/cmd/result`` payload received within that time (None if none came).

    Raises ConnectionError when the broker cannot be reached or does not acknowledge."""
    answer: list[bytes] = []
    got = threading.Event()
    ready = threading.Event()
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    c.suppress_exceptions = True

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        answer.append(bytes(msg.payload))
        got.set()

    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    try:
        c.connect(host, port, keepalive=30)
    except OSError as exc:
        raise ConnectionError(f"cannot reach the broker at {host}:{port}: {exc}") from exc
    c.loop_start()
    try:
        if wait_s > 0:
            c.subscribe(f"{root}/cmd/result", qos=1)
            if not ready.wait(5):
                raise ConnectionError("the broker did not confirm the cmd/result subscription")
        info = c.publish(f"{root}/cmd", message, qos=1)
        info.wait_for_publish(5)
        if not info.is_published():
            raise ConnectionError("the broker did not acknowledge the command")
        if wait_s > 0 and got.wait(wait_s):
            return answer[0]
        return None
    finally:
        c.disconnect()
        c.loop_stop()


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    err = sys.stderr
    if args.action == "keygen":
        try:
            path, public = keygen(args.kid, args.out_dir)
        except OSError as exc:
            print(f"safeedge sign-command keygen: {exc}", file=err)
            return 2
        print(f"private key: {path} (keep it on the platform)", file=out)
        print("add to the gateway config:", file=out)
        print(f'[commands]\ntrusted_keys = {{ "{args.kid}" = "{public}" }}', file=out)
        return 0
    try:
        key = load_private_key(args.key)
        if args.json is not None:
            text = sys.stdin.read() if args.json == "-" else Path(args.json).read_text()
            doc = msgspec.json.decode(text)
        else:
            doc = {"gw": args.gw, "cmd": args.cmd, "args": msgspec.json.decode(args.args)}
        payload = build_payload(doc, command_id=args.id, ts_ms=args.ts)
        message = sign_command(key, args.kid, payload)
        root = root_topic(args.prefix, args.site or "", payload["gw"]) if args.publish else ""
    except (OSError, ValueError, TypeError) as exc:  # msgspec.DecodeError is a ValueError
        print(f"safeedge sign-command sign: {exc}", file=err)
        return 2
    print(message.decode(), file=out, flush=True)
    if not args.publish:
        return 0
    try:
        answer = publish_command(
            host=args.host, port=args.port, root=root, message=message, wait_s=args.wait
        )
    except ConnectionError as exc:
        print(f"safeedge sign-command sign: {exc}", file=err)
        return 1
    if args.wait > 0:
        if answer is None:
            print(f"safeedge sign-command sign: no cmd/result within {args.wait} s", file=err)
            return 1
        print(answer.decode(errors="replace"), file=out)
    return 0
