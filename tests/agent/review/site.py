"""A site history made by the real rule engine and the agent's codec in a real buffer, for the
command tests: a chattering gas detector (GT-101), a leak on GT-102 with a trend warning, a
latched level-2 alarm acknowledged by an operator, a stuck temperature sensor (TT-101) and a
pressure transmitter with a bad-quality spell (PT-101). The incident recorder runs beside the
engine as the runtime runs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.config import AgentConfig, loads_config, resolved_paths
from agent.review.config import RecorderConfig
from agent.review.recorder import IncidentRecorder
from agent.tags import TagTable
from buffer import Store
from provisioning.simulator import tank_farm_config
from rules import RuleEngine
from tests.agent.review.histories import T0, Ack, engine_history

__all__ = ["PERIOD", "SECONDS", "Site"]

SECONDS = 45 * 60
EXTRA_RULES = """
[[rules]]
tags = ["GT-102"]
template = "combustible-gas-lel"
deadband = 2.0
latch = true
trend_window_s = 60.0
trend_horizon_s = 300.0

[[rules]]
tags = ["TT-101"]
stuck_s = 120.0

[review]
lang = "en"
timezone = "Asia/Shanghai"

[review.recorder]
pre_s = 300.0
post_s = 120.0
"""


def _gt101(s: np.ndarray) -> np.ndarray:  # chattering: 20 ↔ 27 %LEL every 10 s for 10 min
    return np.where((s < 600) & ((s // 10) % 2 == 1), 27.0, 20.0)


def _gt102(s: np.ndarray) -> np.ndarray:  # a leak: 3 → 60 %LEL from 12 to 20 min, back by 30
    up = np.clip((s - 720) / 480, 0, 1) * 57
    down = np.clip((s - 1500) / 300, 0, 1) * 57
    return 3.0 + up - down


def _pt101(s: np.ndarray) -> np.ndarray:  # bad quality from 5 to 6 min
    return np.where((s >= 300) & (s < 360), np.nan, 150.0 + np.sin(s / 7))


SIGNALS = {
    "GT-101": _gt101,
    "GT-102": _gt102,
    "TT-101": lambda s: np.full(s.shape, 21.0),  # stuck
    "TT-102": lambda s: 20 + np.sin(s / 30),
    "PT-101": _pt101,
    "LT-101": lambda s: 50 + np.sin(s / 60),
    "LT-102": lambda s: np.full(s.shape, 40.0),
}
ACK_MS = T0 + 19 * 60_000


class Site:
    def __init__(self, root: Path) -> None:
        text = tank_farm_config(
            modbus_host="127.0.0.1",
            modbus_port=1502,
            mqtt_host="127.0.0.1",
            mqtt_port=1883,
            data_dir=str(root / "data"),
            uplink_enabled=False,
        )
        self.config = root / "agent.toml"
        self.config.write_text(text + EXTRA_RULES)
        self.cfg: AgentConfig = loads_config(self.config.read_text(), source=str(self.config))
        self.paths = resolved_paths(self.cfg, self.config)
        tags = TagTable(self.cfg)
        engine = RuleEngine(tags.names, self.cfg.rules)
        limits = {
            t.name: {
                k: float(v)
                for k, v in engine.params(t.index).items()
                if k in ("high", "high_high", "low", "low_low")
            }
            for t in tags
        }
        recorder = IncidentRecorder(
            config=RecorderConfig(pre_s=300.0, post_s=120.0),
            tag_names=tags.names,
            devices=[t.device for t in tags],
            units=[t.unit for t in tags],
            limits=limits,
        )
        with Store.open(
            path=self.paths.buffer_path,
            key_file=self.paths.buffer_key_file,
            gateway_id=self.cfg.gateway.id,
        ) as store:
            engine_history(
                store,
                names=tags.names,
                rules=self.cfg.rules,
                values=SIGNALS,
                seconds=SECONDS,
                acks=[Ack(ACK_MS, "GT-102", "op-zhang")],
                recorder=recorder,
            )

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        code = main(["review", args[0], "--config", str(self.config), *args[1:]])
        out, err = capsys.readouterr()
        return code, out, err


PERIOD = ("--from", "2026-05-29T04:26:40+08:00", "--to", "2026-05-29T05:26:40+08:00")  # T0 + 1 h
