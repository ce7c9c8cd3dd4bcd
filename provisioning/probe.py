"""Read every configured tag once, through the real drivers and planner, for the installer.

:func:`probe_config` builds the devices exactly as ``safeedge run`` does (:func:`drivers.
build_devices`: one device per poll group, the planner's block reads, the device's exclusions),
calls each Modbus device's read-only :meth:`~drivers.ModbusDevice.probe` once (every planned
request once; a timeout does not stop the others), and decodes each tag from the registers its
request returned with the drivers' own codec. A serial-line device is probed (the poll request
once, then the first accepted frame) and polled once to take the readings that frame carried.

Each row says what the platform would see and why: the raw registers in hex, the decoded
value, its quality and the reason when not good, the rule limits that apply (from the same
merge the rule engine does), and whether the value is plausible for its template
(``plausible`` span in rules/templates). Nothing is written to any device.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.config import AgentConfig, DeviceConfig
from agent.setpoints import tag_templates
from drivers import ModbusDevice, SerialLineDevice, build_devices
from drivers.codec import NE43_HIGH_MA, NE43_LOW_MA, decode_registers, decode_tag
from drivers.config import SerialLineDeviceConfig, TagConfig
from drivers.types import Quality
from rules.params import RuleConfigError, load_templates, number, resolve_rules

__all__ = ["DeviceRow", "ProbeReport", "TagRow", "probe_config"]

_LIMIT_KEYS = ("low_low", "low", "high", "high_high")


@dataclass(slots=True)
class TagRow:
    device: str
    tag: str
    address: str  # "holding 40+2", or "field 3" for a serial-line tag
    raw: str  # registers in hex ("0x1234 0x5678"), bits as 0/1; "" when nothing was read
    value: float | None
    unit: str
    quality: str  # wire names: good, bad_comm, bad_device, bad_range, stale
    reason: str
    limits: dict[str, float] = field(default_factory=dict)
    templates: list[str] = field(default_factory=list)
    plausible: bool | None = None  # None: no template span to judge by, or no value
    plausible_span: tuple[float, float] | None = None


@dataclass(slots=True)
class DeviceRow:
    device: str
    answered: bool
    error: str
    requests: int
    refused: list[str] = field(default_factory=list)  # requests answered with an exception
    rtt_ms: float = math.nan


@dataclass(slots=True)
class ProbeReport:
    devices: list[DeviceRow] = field(default_factory=list)
    tags: list[TagRow] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(d.requests for d in self.devices)


def _limits(cfg: AgentConfig) -> dict[str, dict[str, float]]:
    names = [t.name for d in cfg.devices for t in d.tags]
    try:
        params = resolve_rules(cfg.rules, names) if cfg.rules else [None] * len(names)
    except RuleConfigError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, tp in zip(names, params, strict=True):
        if tp is not None:
            out[name] = {k: v for k in _LIMIT_KEYS if (v := number(tp.values, k)) is not None}
    return out


def probe_config(cfg: AgentConfig, *, device: str | None = None) -> ProbeReport:
    """Probe every device of ``cfg`` (or the one named ``device``); see the module docstring.
    Raises ``KeyError`` for an unknown device name and ``drivers.DriverConfigError`` for a
    device the drivers cannot build."""
    chosen = [d for d in cfg.devices if device is None or d.name == device]
    if not chosen:
        raise KeyError(device)
    return asyncio.run(_probe(cfg, chosen))


async def _probe(cfg: AgentConfig, chosen: Sequence[DeviceConfig]) -> ProbeReport:
    tag_index = {t.name: i for i, t in enumerate(t for d in cfg.devices for t in d.tags)}
    ports = {p.name: p for p in cfg.serial_ports}
    report = ProbeReport()
    limits, applied = _limits(cfg), tag_templates(cfg)
    templates = load_templates()
    for dev_cfg in chosen:
        for dev in build_devices(dev_cfg, tag_index=tag_index, serial_ports=ports):
            async with dev:
                if isinstance(dev, ModbusDevice):
                    await _modbus(dev, dev_cfg, report)
                else:
                    await _line(dev, dev_cfg, report, tag_index)
    for row in report.tags:
        row.limits = limits.get(row.tag, {})
        row.templates = applied.get(row.tag, [])
        for name in row.templates:
            span = templates[name].plausible if name in templates else None
            if span is not None:
                row.plausible_span = span
                if row.value is not None:
                    row.plausible = span[0] <= row.value <= span[1]
    return report


async def _modbus(dev: ModbusDevice, cfg: DeviceConfig, report: ProbeReport) -> None:
    result = await dev.probe()
    rtts = [r.rtt_ms for r in result.reads if math.isfinite(r.rtt_ms)]
    row = DeviceRow(dev.name, result.connected, result.error, len(result.reads),
                    rtt_ms=max(rtts) if rtts else math.nan)  # fmt: skip
    report.devices.append(row)
    for req, read in zip(dev.requests, result.reads, strict=True):
        if not read.ok and "exception response" in read.error:
            row.refused.append(f"{read.table} {read.address}+{read.count}: {read.error}")
        for p in req.points:
            tag = dev.tags[p.tag]
            where = f"{req.table} {req.address + p.offset}" + (f"+{p.width}" if p.width > 1 else "")
            if tag.bit is not None:
                where += f" bit {tag.bit}"
            if not read.ok:
                refused = "exception response" in read.error
                quality = Quality.BAD_DEVICE if refused else Quality.BAD_COMM
                report.tags.append(_row(dev.name, tag, where, "", None, quality, read.error))
                continue
            data = read.data[p.offset : p.offset + p.width]
            value, quality = decode_tag(tag, data, dev.byte_order)
            raw = " ".join(str(v) if req.is_bits else f"0x{v:04X}" for v in data)
            reason = "" if quality == Quality.GOOD else _range_reason(tag, data, dev.byte_order)
            shown = value if quality == Quality.GOOD else None
            report.tags.append(_row(dev.name, tag, where, raw, shown, quality, reason))


def _row(
    device: str,
    tag: TagConfig,
    where: str,
    raw: str,
    value: float | None,
    quality: Quality,
    reason: str,
) -> TagRow:
    return TagRow(device, tag.name, where, raw, value, tag.unit, quality.wire_name, reason)


def _range_reason(tag: TagConfig, data: Sequence[int], order: str) -> str:
    """Why a decoded value is BAD_RANGE (the codec's checks, said in words)."""
    if tag.bit is not None or tag.table in ("coil", "discrete"):
        return "outside the tag range"
    raw = decode_registers([int(r) for r in data], tag.type, tag.byte_order or order)  # type: ignore[arg-type]
    value = raw * tag.scale + tag.offset
    loop = tag.current_loop
    if loop is not None:
        ma = 4.0 + 16.0 * (value - loop.raw_span[0]) / (loop.raw_span[1] - loop.raw_span[0])
        if not NE43_LOW_MA <= ma <= NE43_HIGH_MA:
            kind = "wire break" if ma < NE43_LOW_MA else "transmitter fault"
            return f"{ma:.2f} mA is outside {NE43_LOW_MA}-{NE43_HIGH_MA} mA: {kind} (NAMUR NE43)"
        value = loop.span[0] + (ma - 4.0) / 16.0 * (loop.span[1] - loop.span[0])
    if not math.isfinite(value):
        return f"the registers decode to {raw} (not a number)"
    if tag.range is not None:
        return f"{value:g} is outside the tag range [{tag.range[0]:g}, {tag.range[1]:g}]"
    return "not good"


async def _line(
    dev: SerialLineDevice, cfg: DeviceConfig, report: ProbeReport, tag_index: dict[str, int]
) -> None:
    assert isinstance(cfg, SerialLineDeviceConfig)
    result = await dev.probe()
    report.devices.append(
        DeviceRow(
            dev.name, result.ok, result.error, 1 if result.request_sent else 0, rtt_ms=result.rtt_ms
        )  # fmt: skip
    )
    batch = await dev.poll() if result.ok else None
    got: dict[int, tuple[float, int]] = {}
    if batch is not None:
        for k in range(len(batch)):
            got[int(batch.tag[k])] = (float(batch.value[k]), int(batch.quality[k]))
    for tag in cfg.tags:
        where = f"field {tag.field}" + (f" key {tag.key}" if tag.key is not None else "")
        value, q = got.get(tag_index[tag.name], (math.nan, int(Quality.BAD_COMM)))
        quality = Quality(q)
        reason = "" if quality == Quality.GOOD else (result.error or "no reading in the frame")
        shown = value if quality == Quality.GOOD else None
        report.tags.append(
            TagRow(dev.name, tag.name, where, "", shown, tag.unit, quality.wire_name, reason)
        )
