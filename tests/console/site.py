"""A running agent with its console against the tank-farm simulator, for the console tests.

The agent runs in-process on a loop thread of its own (as ``safeedge run`` runs it, minus the
process), the simulator (a real pymodbus TCP server) on that loop too; the uplink goes to a real
Mosquitto the test starts. Users: ``op`` (operator) and ``view`` (viewer), password
``correct horse``; hashes made with a low scrypt cost so the tests stay quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from agent.config import loads_config, resolved_paths
from agent.console.passwords import hash_password
from agent.pipeline import Pipeline
from provisioning.localbroker import free_port
from provisioning.simulator import TankFarmSimulator, tank_farm_config

__all__ = ["PASSWORD", "Site", "WebClient", "console_toml"]

PASSWORD = "correct horse"


def console_toml(**keys: object) -> str:
    lines = ["", "[console]", "enabled = true", "port = 0"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    for name, role in (("op", "operator"), ("view", "viewer")):
        pw_hash = hash_password(PASSWORD, n=2**10)
        lines += [
            "[[console.users]]",
            f'name = "{name}"',
            f'role = "{role}"',
            f'password_hash = "{pw_hash}"',
        ]
    return "\n".join(lines) + "\n"


class Site:
    """``start_simulator()`` brings the PLC up (the leak starts ``leak_start_s`` scenario
    seconds later, at ``time_scale``); ``stop()`` stops the agent in order."""

    def __init__(self, tmp: Path, *, mqtt_port: int, console: dict[str, object]) -> None:
        self.modbus_port = free_port()
        text = tank_farm_config(
            modbus_host="127.0.0.1",
            modbus_port=self.modbus_port,
            mqtt_host="127.0.0.1",
            mqtt_port=mqtt_port,
            data_dir=str(tmp / "data"),
        ) + console_toml(**console)
        path = tmp / "agent.toml"
        path.write_text(text)
        cfg = loads_config(text, source=str(path))
        self.pipeline = Pipeline(cfg, resolved_paths(cfg, path), flush_timeout_s=0.5)
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._sim_stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="agent")
        self._thread.start()
        self.call(lambda: None)
        asyncio.run_coroutine_threadsafe(self._ready(), self.loop).result(90)
        console_obj = self.pipeline.console
        assert console_obj is not None and console_obj.url is not None
        self.url = console_obj.url

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.pipeline.run(self._stop))

    async def _ready(self) -> None:
        await self.pipeline.ready.wait()
        while self.pipeline.console is None or self.pipeline.console.url is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the url is set once the console task has bound

    def call(self, fn: Any) -> Any:
        async def run() -> Any:
            return fn()

        while not self.loop.is_running():
            threading.Event().wait(0.01)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def start_simulator(self, *, leak_start_s: float, time_scale: float) -> None:
        async def sim() -> None:
            async with TankFarmSimulator(
                port=self.modbus_port, time_scale=time_scale, leak_start_s=leak_start_s, seed=3
            ):
                await self._sim_stop.wait()

        self._sim = asyncio.run_coroutine_threadsafe(sim(), self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._sim_stop.set)
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        with contextlib.suppress(Exception):
            self.loop.close()


class WebClient:
    """A cookie-keeping HTTP client (urllib) for what a browser need not show."""

    def __init__(self, base: str, *, ca_file: Path | None = None) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPCookieProcessor(self.jar)]
        if ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(ca_file))
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        self.opener = urllib.request.build_opener(*handlers)
        self.headers: list[tuple[str, str]] = []  # of the last response

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path.lstrip("/"), timeout=10) as r:
                self.headers = list(r.headers.items())
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def csrf(self, path: str = "login") -> str:
        _, text = self.get(path)
        m = re.search(r'name="csrf" (?:value|content)="([^"]+)"', text)
        assert m, text[:500]
        return m.group(1)

    def post(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.base + path.lstrip("/"), data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def login(self, user: str, password: str = PASSWORD) -> int:
        token = self.csrf("login")
        status, _ = self.post("login", {"csrf": token, "user": user, "password": password})
        return status
