"""The console over HTTPS as the agent serves it (no browser needed): TLS and cookie flags, the
anonymous wall-screen board, the login rate limit, argument checks. The agent runs with no
PLC and no broker reachable: the console must work regardless."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import loads_config, resolved_paths
from agent.pipeline import Pipeline
from buffer import Store
from buffer.record import Stream
from provisioning.localbroker import free_port
from provisioning.simulator import tank_farm_config
from tests.console.site import PASSWORD, Site, WebClient, console_toml
from tests.support.mosquitto import _Pki

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_site(tmp_path: Path) -> Iterator[tuple[Site, Path]]:
    pki = _Pki(tmp_path / "pki")
    site = Site(
        tmp_path,
        mqtt_port=free_port(),  # nothing listens: the uplink stays down
        console={
            "tls_cert_file": str(pki.server.cert_file),
            "tls_key_file": str(pki.server.key_file),
            "anonymous_board": True,
            "language": "en",
        },
    )
    yield site, pki.ca_file
    site.stop()


def test_over_https_the_wall_screen_reads_the_board_and_logins_are_limited(
    tls_site: tuple[Site, Path],
) -> None:
    site, ca = tls_site
    assert site.url.startswith("https://127.0.0.1:")
    wall = WebClient(site.url, ca_file=ca)
    status, page = wall.get("/")
    assert status == 200 and 'id="board"' in page and "not logged in" in page
    assert 'action="/ack"' not in page  # read-only
    cookie = next(v for k, v in wall.headers if k == "Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    headers = dict(wall.headers)
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, page = wall.get("/live")
    assert status == 200 and 'id="login"' in page  # redirected: live values need a login
    status, _ = wall.get("/events?page=health")
    assert status == 403

    op = WebClient(site.url, ca_file=ca)
    token = op.csrf("login")
    for _ in range(5):
        status, page = op.post("login", {"csrf": token, "user": "op", "password": "guess"})
        assert status == 401 and "Wrong user name or password" in page
    status, page = op.post("login", {"csrf": token, "user": "op", "password": PASSWORD})
    assert status == 429 and "Too many attempts" in page  # even the right password now

    other = WebClient(site.url, ca_file=ca)  # same address: limited too; a new name is not
    assert other.login("view") == 429
    status, _ = other.post("login", {"user": "view", "password": PASSWORD})
    assert status == 403  # no CSRF token: refused before anything else


def test_an_operator_gets_clear_errors_for_bad_arguments(tls_site: tuple[Site, Path]) -> None:
    site, ca = tls_site
    op = WebClient(site.url, ca_file=ca)
    assert op.login("op") == 200
    token = op.csrf("/")
    cases = [
        ("ack", {"tag": "NO-SUCH", "alarm": "high"}, "tag: not a configured tag"),
        ("ack", {"tag": "GT-101", "alarm": "stuck"}, "only high and low"),
        ("shelve", {"tag": "GT-101", "alarm": "high", "reason": " "}, "reason is required"),
        ("shelve", {"tag": "GT-101", "alarm": "high", "reason": "r", "minutes": "9999"},
         "at most 28800 s"),
        ("unshelve", {"tag": "GT-101", "alarm": "high"}, "is not shelved"),
    ]  # fmt: skip
    for path, form, message in cases:
        status, text = op.post(path, {"csrf": token, **form})
        assert (status, message in text) == (400, True), (path, text)
    status, text = op.post("ack", {"csrf": token, "tag": "GT-101", "alarm": "high"},
                           headers={"X-CSRF-Token": token})  # fmt: skip
    assert status == 200 and "nothing to acknowledge" in text


def test_a_taken_console_port_leaves_the_agent_polling_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = tank_farm_config(
            modbus_host="127.0.0.1", modbus_port=free_port(), mqtt_host="127.0.0.1",
            mqtt_port=free_port(), data_dir=str(tmp_path / "data"), uplink_enabled=False,
        ) + console_toml().replace("port = 0", f"port = {port}")  # fmt: skip
        cfg = loads_config(text)
        paths = resolved_paths(cfg, tmp_path / "agent.toml")

        async def scenario() -> int:
            pipeline = Pipeline(cfg, paths, flush_timeout_s=0.5)
            stop = asyncio.Event()
            task = asyncio.create_task(pipeline.run(stop))
            await asyncio.wait_for(pipeline.ready.wait(), 60)
            await asyncio.sleep(1.5)
            assert not task.done()
            stop.set()
            await asyncio.wait_for(task, 30)
            assert pipeline.console is not None and pipeline.console.url is None
            return pipeline.stats.polls

        assert asyncio.run(scenario()) >= 1
    with Store.open(path=paths.buffer_path, key_file=paths.buffer_key_file, gateway_id="GW1") as s:
        last = s.stats().streams[Stream.EVENT].last_seq
        kinds = [json.loads(r.payload)["kind"] for r in s.resend(Stream.EVENT, 1, last)]
    assert "console_unavailable" in kinds
