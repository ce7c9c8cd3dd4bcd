"""The config file's schema: frozen msgspec structs, pure data (reference: docs/config.md).

Structure::

    [gateway]        site, id, data_dir
    [uplink]         MQTT broker, topic prefix, TLS, credentials
    [commands]       trusted Ed25519 keys of the platform for signed downlink commands
    [buffer]         buffer.config.BufferConfig
    [operations]     health event, status socket, Prometheus endpoint (docs/operations.md)
    [[serial_ports]] drivers.config.SerialPortConfig
    [[devices]]      drivers.config.ModbusTcpDeviceConfig | ModbusRtuDeviceConfig
                     | SerialLineDeviceConfig (by ``driver``)
      [[devices.tags]]
    [[rules]]        rules.config.RuleConfig
    [[outputs]]      AlarmOutputConfig: drivers.outputs.OutputConfig + when (agent/alarm_outputs.py)
    [console]        agent.console.config.ConsoleConfig (the local web console, off by default)

Types and simple bounds are msgspec's; every other check is in :mod:`agent.config.checks`
(which composes the leaves' own checks). A config returned by :func:`agent.config.load_config`
holds absolute paths (:mod:`agent.config.paths`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from agent.config.governance import CodesConfig, PolicyConfig, TagGovernanceConfig
from agent.console.config import ConsoleConfig
from agent.review.config import ReviewConfig
from buffer.config import BufferConfig
from drivers.config import (
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    SerialLineDeviceConfig,
    SerialPortConfig,
)
from drivers.outputs import OutputConfig
from rules.config import RuleConfig
from rules.events import AlarmKind

__all__ = [
    "ID_PATTERN",
    "AgentConfig",
    "AlarmOutputConfig",
    "CommandsConfig",
    "DeviceConfig",
    "GatewayConfig",
    "LoggingConfig",
    "MetricsConfig",
    "OperationsConfig",
    "OutputWhen",
    "ReportByExceptionConfig",
    "TlsConfig",
    "UplinkConfig",
]

ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]

DeviceConfig = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig | SerialLineDeviceConfig


class GatewayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    site: Id
    id: Id
    data_dir: str = "/var/lib/safeedge"  # relative: to the config file's directory
    codes: CodesConfig = CodesConfig()  # agent/config/governance.py


class TlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    ca_file: str
    cert_file: str | None = None  # cert_file and key_file: both or neither
    key_file: str | None = None


class ReportByExceptionConfig(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """``[uplink.report_by_exception]``: present = telemetry is reported by exception
    (agent/telemetry.py): a tag's sample is sent when its quality changes, its value moves by
    more than its deadband, or ``integrity_s`` passed since it was last sent."""

    deadband: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    deadbands: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = {}
    integrity_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0


class UplinkConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    prefix: str = "safeedge/v1"
    protocol: Literal["mqtt5", "mqtt311"] = "mqtt5"
    client_id: str | None = None  # default "safeedge-{site}-{gateway}"
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    username: str | None = None
    password_file: str | None = None
    tls: TlsConfig | None = None
    backfill_after_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 100
    # points per message: a device poll of up to 1000 tags is one message
    telemetry_batch: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 1000
    telemetry_max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16_777_216)] = 65536
    telemetry_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 0
    drain_rate: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # backfill messages/s; 0: unlimited
    report_by_exception: ReportByExceptionConfig | None = None
    reconnect_min_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    # 5 s: after an outage a gateway retries within U(0.5, 5) s (back within ~2 s median)
    # while a fleet's reconnects still spread over ~4.5 s (benchmarks/bench_fleet.py)
    reconnect_max_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # Body v2 and compression: design/UPLINK.md; policy and tags: agent/config/governance.py
    telemetry_body: Literal[1, 2] = 2
    compression: Literal["none", "zlib"] = "none"
    policy: PolicyConfig = PolicyConfig()
    tags: tuple[TagGovernanceConfig, ...] = ()
    # MQTT 5 Maximum Packet Size sent in CONNECT: the broker never delivers a larger packet.
    max_packet_bytes: Annotated[int, msgspec.Meta(ge=1024, le=268_435_455)] = 65536


class CommandsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Signed downlink commands (design/UPLINK.md, docs/uplink.md).

    ``trusted_keys`` maps a key id (the command's ``kid``) to the base64 of a raw 32-byte
    Ed25519 public key (``safeedge sign-command keygen`` prints it). With no key every command
    is rejected (``unknown_key``). ``seen_ids_max`` bounds the persisted replay store;
    ``max_resend`` bounds the records one ``resend`` command may republish.

    Hostile input (agent/commands/inbox.py): a message above ``max_bytes`` is dropped unparsed;
    at most ``queue_max`` wait (newer ones are dropped and counted); at most ``max_per_s`` are
    handled and ``verify_per_s`` signatures checked per second (beyond: ``rate_limited``).
    """

    enabled: bool = True
    trusted_keys: dict[Id, str] = {}
    seen_ids_max: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 10_000
    max_resend: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    max_bytes: Annotated[int, msgspec.Meta(ge=512, le=1_048_576)] = 16384
    queue_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    max_per_s: Annotated[float, msgspec.Meta(gt=0, le=100_000)] = 200.0
    verify_per_s: Annotated[float, msgspec.Meta(gt=0, le=100_000)] = 100.0


class LoggingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[logging]``: ``format`` text lines or one JSON object per line (``--log-format``
    overrides it)."""

    format: Literal["text", "json"] = "text"


class OutputWhen(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[outputs.when]``: the alarms that put an output in alarm (agent/alarm_outputs.py):
    tags by name, ``match`` glob or ``devices`` (none of the three: every tag), of a kind in
    ``kinds``, at level ``>= min_level``, and with ``unacknowledged``: not yet acknowledged."""

    tags: tuple[str, ...] = ()
    match: str = ""
    devices: tuple[str, ...] = ()
    kinds: tuple[AlarmKind, ...] = ("high", "low")
    min_level: Annotated[int, msgspec.Meta(ge=1, le=3)] = 1
    unacknowledged: bool = False


class AlarmOutputConfig(OutputConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[outputs]]`` entry: where and how to write (drivers.outputs.OutputConfig) and
    ``when``. Monitoring-grade only (docs/outputs.md)."""

    when: OutputWhen = OutputWhen()


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The optional Prometheus endpoint (off by default; loopback by default)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 9108


class OperationsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``health_interval_s``: the periodic ``health`` event (0: none). ``status_socket``: the
    local control socket ``safeedge status`` reads (empty: ``$RUNTIME_DIRECTORY/status.sock``
    under systemd, else ``<data_dir>/status.sock``); mode 0660, group ``status_group`` when
    set (else the agent's group)."""

    health_interval_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 60.0
    status_socket: str = ""
    status_group: str = ""
    metrics: MetricsConfig = MetricsConfig()


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    gateway: GatewayConfig
    uplink: UplinkConfig = UplinkConfig()
    commands: CommandsConfig = CommandsConfig()
    logging: LoggingConfig = LoggingConfig()
    buffer: BufferConfig = BufferConfig()
    operations: OperationsConfig = OperationsConfig()
    serial_ports: tuple[SerialPortConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    outputs: tuple[AlarmOutputConfig, ...] = ()
    review: ReviewConfig = ReviewConfig()
    console: ConsoleConfig = ConsoleConfig()
