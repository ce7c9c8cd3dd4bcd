"""The commissioning report: one JSON document, a self-contained HTML page, a signature, and
the ``commissioned`` event that carries its digest upstream.

The JSON bytes are canonical (sorted keys, UTF-8, two-space indent) and are what is signed and
digested: ``digest = sha256(json bytes)``. The signature (optional) is ECDSA P-256/SHA-256
with the gateway's own key, DER, base64, written beside the report as ``<name>.sig.json``
together with the key's fingerprint; :func:`verify_signature` checks it with the gateway's
certificate or public key. The HTML embeds every check (one ``<tr class="check">`` each, with
``data-check-id`` and ``data-status``), the verdict (``id="result"``, ``data-result``), the
signature if any, and the JSON itself; all text is HTML-escaped, no external resources.

Sending upstream: the event goes into the gateway's own buffer (same store, key, seq ledger as
the agent), so it gets a seq that is never reused and the agent delivers it like any event. The
buffer is locked while the agent runs: stop it first (the report says so if not).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent import __version__
from agent.codec import event_body
from agent.config import AgentConfig, ResolvedPaths
from agent.tags import config_hash
from buffer.record import Stream
from drivers import wall_clock_ms
from provisioning.commission import Check
from provisioning.identity import fingerprint

__all__ = [
    "build_report",
    "queue_event",
    "render_html",
    "report_bytes",
    "sign_report",
    "verify_signature",
]


def build_report(
    *,
    checks: list[Check],
    cfg: AgentConfig | None,
    config_path: Path,
    installer: str,
    now_ms: int,
) -> dict[str, Any]:
    try:
        file_hash = hashlib.sha256(config_path.read_bytes()).hexdigest()
    except OSError:
        file_hash = ""
    counts: Counter[str] = Counter(c.status for c in checks)
    return {
        "v": 1,
        "kind": "safeedge.commissioning",
        "site": cfg.gateway.site if cfg else None,
        "gateway": cfg.gateway.id if cfg else None,
        "config_file": str(config_path),
        "config_sha256": file_hash,
        "config_hash": config_hash(cfg) if cfg else None,
        "installer": installer,
        "ts": now_ms,
        "time": dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).isoformat(timespec="seconds"),
        "agent": __version__,
        "result": "no-go" if counts["FAIL"] else "go",
        "counts": {k: counts[k] for k in ("PASS", "WARN", "FAIL")},
        "checks": [asdict(c) for c in checks],
    }


def report_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, ensure_ascii=False, indent=2) + "\n").encode()


def sign_report(data: bytes, key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    return {
        "alg": "ECDSA-SHA256",
        "key_fingerprint": fingerprint(key.public_key()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "signature": base64.b64encode(sig).decode(),
    }


def verify_signature(data: bytes, sig: dict[str, str], public: ec.EllipticCurvePublicKey) -> bool:
    try:
        public.verify(base64.b64decode(sig["signature"]), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, KeyError, ValueError):
        return False
    return True


_CSS = """
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4em;
vertical-align:top;text-align:left}.PASS{background:#e6f4ea}.WARN{background:#fff4d6}
.FAIL{background:#fde2e1}#result{font-size:1.6em;font-weight:bold}
#result.go{color:#137333}#result.no-go{color:#b3261e}pre{white-space:pre-wrap}
"""


def render_html(doc: dict[str, Any], signature: dict[str, str] | None = None) -> str:
    """A self-contained page (see the module docstring)."""
    e = html.escape
    verdict = str(doc["result"])
    rows = "\n".join(
        f'<tr class="check {e(c["status"])}" data-check-id="{e(c["id"])}" '
        f'data-status="{e(c["status"])}"><td>{e(c["id"])}</td><td>{e(c["title"])}</td>'
        f"<td>{e(c['status'])}</td><td>{e(c['evidence'])}</td><td>{e(c['fix'])}</td></tr>"
        for c in doc["checks"]
    )
    sig = (
        f'<p id="signature">signed by key {e(signature["key_fingerprint"])}: '
        f"<code>{e(signature['signature'])}</code></p>"
        if signature
        else '<p id="signature">not signed</p>'
    )
    counts = doc["counts"]
    data = report_bytes(doc).decode().replace("</", "<\\/")  # never closes the script element
    head = f"{doc.get('site') or '?'} / {doc.get('gateway') or '?'}"
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>SafeEdge commissioning {e(head)}</title><style>{_CSS}</style></head>
<body>
<h1>SafeEdge commissioning report 调试验收报告</h1>
<p id="result" class="{e(verdict)}" data-result="{e(verdict)}">{e(verdict.upper())}</p>
<table id="meta">
<tr><th>site 站点</th><td>{e(str(doc.get("site")))}</td></tr>
<tr><th>gateway 网关</th><td>{e(str(doc.get("gateway")))}</td></tr>
<tr><th>config</th><td>{e(str(doc["config_file"]))} sha256 {e(str(doc["config_sha256"]))}
 (hash {e(str(doc.get("config_hash")))})</td></tr>
<tr><th>installer 调试人员</th><td>{e(str(doc["installer"]))}</td></tr>
<tr><th>time 时间 (UTC)</th><td>{e(str(doc["time"]))} ({e(str(doc["ts"]))} ms)</td></tr>
<tr><th>checks</th><td>{counts["PASS"]} PASS, {counts["WARN"]} WARN, {counts["FAIL"]} FAIL</td></tr>
</table>
<h2>Checks 检查项</h2>
<table id="checks"><tr><th>id</th><th>check</th><th>status</th><th>evidence 依据</th>
<th>fix 处理</th></tr>
{rows}
</table>
{sig}
<script type="application/json" id="report-data">{data}</script>
</body></html>
"""


def queue_event(cfg: AgentConfig, paths: ResolvedPaths, doc: dict[str, Any], digest: str) -> int:
    """Append the ``commissioned`` event to the gateway's buffer; returns its event seq.
    Raises ``buffer`` errors (e.g. ``BufferInUseError`` while the agent runs)."""
    fields = {
        "result": doc["result"],
        "digest": digest,
        "config_hash": doc["config_hash"],
        "installer": doc["installer"],
        "counts": doc["counts"],
        "failed": [c["id"] for c in doc["checks"] if c["status"] == "FAIL"],
    }
    # the agent's own way of opening its buffer (same arguments, same store), so the event gets
    # a seq from the ledger and is delivered by the agent like any other. Imported here: the
    # runtime loads numba, which `safeedge run` must import only after choosing its cache dir.
    from agent.runtime.build import build, open_store

    components = build(cfg, paths, password=None, clock_ms=wall_clock_ms)
    with open_store(components) as store:
        [seq] = store.append(Stream.EVENT, [event_body("commissioned", int(doc["ts"]), fields)])
        return seq
