"""The config file: loading, error translation, semantic checks, paths and ``check-config``."""

from __future__ import annotations

import argparse
import textwrap
import tomllib
import typing
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import cmd_config
from agent.config import (
    AgentConfig,
    AlarmOutputConfig,
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    OutputWhen,
    TlsConfig,
    UplinkConfig,
    load_config,
    loads_config,
    resolved_paths,
)
from agent.config.schema import MetricsConfig, OperationsConfig
from agent.console.config import ConsoleConfig, ConsoleUser
from agent.review.config import RecorderConfig, ReviewConfig
from buffer.config import BufferConfig
from drivers import HeartbeatConfig
from drivers.config import (
    CurrentLoopConfig,
    DataType,
    ExcludeConfig,
    ModbusRtuDeviceConfig,
    ModbusTcpDeviceConfig,
    PollGroupConfig,
    SerialLineDeviceConfig,
    SerialLineTagConfig,
    SerialPortConfig,
    TagConfig,
)
from rules.config import RuleConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REFERENCE = EXAMPLES / "reference.toml"

GATEWAY = """
[gateway]
site = "S1"
id = "G1"
"""


def tcp(name: str, *tags: str, extra: str = "", unit_id: int = 1, host: str = "10.0.0.5") -> str:
    """A [[devices]] modbus_tcp table; ``tags`` are tag names at consecutive addresses."""
    body = f"""
[[devices]]
driver = "modbus_tcp"
name = "{name}"
host = "{host}"
unit_id = {unit_id}
{extra}
"""
    return body + "".join(tag(t, i) for i, t in enumerate(tags))


def rtu(name: str, port: str, unit_id: int, *tags: str) -> str:
    body = f"""
[[devices]]
driver = "modbus_rtu"
name = "{name}"
serial_port = "{port}"
unit_id = {unit_id}
"""
    return body + "".join(tag(t, i) for i, t in enumerate(tags))


def tag(name: str, address: int, extra: str = "") -> str:
    return f"""
  [[devices.tags]]
  name = "{name}"
  address = {address}
  {extra}
"""


def serial(name: str, path: str) -> str:
    return f"""
[[serial_ports]]
name = "{name}"
path = "{path}"
"""


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        loads_config(textwrap.dedent(text), source="site.toml")
    assert info.value.source == "site.toml"
    return info.value.issues


def only_issue(text: str) -> ConfigIssue:
    issues = issues_of(text)
    assert len(issues) == 1, issues
    return issues[0]


# --- the examples ------------------------------------------------------------------------------


def test_the_reference_example_loads_with_both_device_kinds_and_its_rules() -> None:
    cfg = load_config(REFERENCE)
    assert cfg.gateway.id == "tank-farm-gw1"
    kinds = {type(d) for d in cfg.devices}
    assert kinds == {ModbusTcpDeviceConfig, ModbusRtuDeviceConfig, SerialLineDeviceConfig}
    assert cfg.serial_ports[0].parity == "E"
    assert cfg.uplink.tls is not None
    # load_config resolves the file's relative paths against its directory (agent.config.paths)
    assert cfg.uplink.tls.key_file == str(EXAMPLES.absolute() / "certs/gateway.key")
    assert len(cfg.rules) == 4


from agent.config.governance import (  # noqa: E402 - the governance tables
    CodesConfig,
    PolicyConfig,
    TagGovernanceConfig,
)


def _fields(cls: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(cls)}


def test_the_reference_example_shows_every_key_of_every_table() -> None:
    raw = tomllib.loads(REFERENCE.read_text(encoding="utf-8"))
    devices = raw["devices"]
    modbus = [d for d in devices if d["driver"] != "serial_line"]
    lines = [d for d in devices if d["driver"] == "serial_line"]
    seen: dict[type[msgspec.Struct], set[str]] = {
        AgentConfig: set(raw),
        GatewayConfig: set(raw["gateway"]),
        UplinkConfig: set(raw["uplink"]),
        TlsConfig: set(raw["uplink"]["tls"]),
        BufferConfig: set(raw["buffer"]),
        OperationsConfig: set(raw["operations"]),
        MetricsConfig: set(raw["operations"]["metrics"]),
        SerialPortConfig: set().union(*raw["serial_ports"]),
        ModbusTcpDeviceConfig: set().union(*(d for d in devices if d["driver"] == "modbus_tcp")),
        ModbusRtuDeviceConfig: set().union(*(d for d in devices if d["driver"] == "modbus_rtu")),
        TagConfig: set().union(*(t for d in modbus for t in d["tags"])),
        ExcludeConfig: set().union(*(e for d in modbus for e in d.get("exclude", ()))),
        PollGroupConfig: set().union(*(g for d in modbus for g in d.get("poll_groups", ()))),
        CurrentLoopConfig: set().union(
            *(t["current_loop"] for d in modbus for t in d["tags"] if "current_loop" in t)
        ),
        SerialLineDeviceConfig: set().union(*lines),
        SerialLineTagConfig: set().union(*(t for d in lines for t in d["tags"])),
        RuleConfig: set().union(*raw["rules"]),
        PolicyConfig: set(raw["uplink"]["policy"]),
        TagGovernanceConfig: set().union(*raw["uplink"]["tags"]),
        CodesConfig: set(raw["gateway"]["codes"]).union(
            *(t.get("codes", {}) for t in raw["uplink"]["tags"])
        ),
        AlarmOutputConfig: set().union(*raw["outputs"]),
        OutputWhen: set().union(*(o["when"] for o in raw["outputs"] if "when" in o)),
        HeartbeatConfig: set().union(*(o["heartbeat"] for o in raw["outputs"] if "heartbeat" in o)),
        ReviewConfig: set(raw["review"]),
        RecorderConfig: set(raw["review"]["recorder"]),
        ConsoleConfig: set(raw["console"]),
        ConsoleUser: set().union(*raw["console"]["users"]),
    }
    # `template` needs a shipped template name; docs/config.md shows it instead.
    optional: dict[type[msgspec.Struct], set[str]] = {RuleConfig: {"template"}}
    for cls, keys in seen.items():
        missing = _fields(cls) - keys - optional.get(cls, set())
        assert not missing, f"{cls.__name__}: {sorted(missing)}"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.devices, f"{path.name} configures no device"


# --- shape and type errors (msgspec, first error only) -----------------------------------------


def test_an_unknown_key_is_named_by_path_and_the_closest_key_is_suggested() -> None:
    issue = only_issue(GATEWAY + '[uplink]\nhots = "broker"\n')
    assert issue == ConfigIssue("uplink.hots", "unknown key", 'did you mean "host"?')


def test_an_unknown_tag_key_is_named_with_device_and_tag_names() -> None:
    issue = only_issue(GATEWAY + tcp("plc-1", "GT-100") + tag("GT-101", 9, "adress = 3"))
    assert issue.path == 'devices[0] "plc-1".tags[1] "GT-101".adress'
    assert issue.hint == 'did you mean "address"?'


def test_an_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    issue = only_issue(GATEWAY + "[buffer]\nzzz = 1\n")
    assert issue.path == "buffer.zzz"
    assert issue.hint == (
        "valid keys: alarm, capacity_mb, cipher, event, key_file, path, reserve_mb, "
        "retention_days, telemetry"
    )


def test_a_device_key_written_after_a_tag_header_is_explained() -> None:
    issue = only_issue(GATEWAY + tcp("plc-1", "GT-101") + "poll_interval_s = 5\n")
    assert issue.path == 'devices[0] "plc-1".tags[0] "GT-101".poll_interval_s'
    assert issue.message == "unknown key"
    assert issue.hint.startswith('"poll_interval_s" is a key of devices[0] "plc-1": TOML puts')


def test_a_top_level_key_written_after_a_table_header_is_explained() -> None:
    issue = only_issue(GATEWAY + "serial_ports = []\n")
    assert issue.path == "gateway.serial_ports"
    assert issue.hint.startswith('"serial_ports" is a key of the top level: TOML puts')


def test_a_wrong_type_names_expected_and_found_values() -> None:
    issue = only_issue(GATEWAY + '[uplink]\nport = "1883"\n')
    assert issue.path == "uplink.port"
    assert issue.message == 'expected integer, got string (found "1883")'
    assert issue.hint == "expected an integer from 1 to 65535"


def test_a_value_out_of_bounds_names_the_bound() -> None:
    issue = only_issue(GATEWAY + tcp("plc-1", "GT-101", extra="max_registers = 126"))
    assert issue.path == 'devices[0] "plc-1".max_registers'
    assert issue.message == "expected integer <= 125 (found 126)"
    assert issue.hint == "expected an integer from 1 to 125"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('[gateway]\nsite = "S1"\nid = "gw 1"\n', "gateway.id"),
        ('[gateway]\nsite = "site/1"\nid = "G1"\n', "gateway.site"),
        (GATEWAY + tcp("plc 1", "GT-101"), 'devices[0] "plc 1".name'),
        (GATEWAY + tcp("plc-1", "GT/101"), 'devices[0] "plc-1".tags[0] "GT/101".name'),
        ('[gateway]\nsite = "S1"\nid = "' + "g" * 65 + '"\n', "gateway.id"),
    ],
)
def test_a_bad_id_is_rejected_with_the_allowed_alphabet(text: str, path: str) -> None:
    issue = only_issue(text)
    assert issue.path == path
    assert issue.message.startswith("invalid value ")
    assert issue.hint == "expected a name of 1 to 64 characters from A-Z a-z 0-9 _ . -"


def test_an_unknown_driver_lists_the_drivers() -> None:
    issue = only_issue(GATEWAY + tcp("plc-1", "GT-101").replace("modbus_tcp", "modbus_udp"))
    assert issue.path == 'devices[0] "plc-1".driver'
    assert issue.message == 'invalid value "modbus_udp"'
    assert issue.hint == 'expected one of "modbus_tcp", "modbus_rtu", "serial_line"'


def test_an_invalid_enum_value_lists_the_allowed_values() -> None:
    issue = only_issue(GATEWAY + serial("bus-a", "/dev/ttyS1") + "parity = 'X'\n")
    assert issue.path == 'serial_ports[0] "bus-a".parity'
    assert issue.hint == 'expected one of "E", "N", "O"'


def test_a_missing_gateway_table_says_which_keys_it_needs() -> None:
    issue = only_issue('[uplink]\nhost = "broker"\n')
    assert issue == ConfigIssue(
        "gateway", "missing required table", "add a [gateway] table with site, id"
    )


def test_a_missing_required_key_is_named() -> None:
    issue = only_issue(GATEWAY + "[uplink.tls]\ncert_file = 'c.pem'\nkey_file = 'c.key'\n")
    assert issue.path == "uplink.tls.ca_file"
    assert issue.message == "missing required key"


def test_a_toml_syntax_error_gives_line_and_column_and_shows_the_line() -> None:
    text = '[gateway]\nsite = "S1"\nid = G1\n'
    issue = only_issue(text)
    assert issue.path == "line 3, column 6"
    assert issue.message == "invalid TOML: Invalid value"
    assert "the line reads: id = G1" in issue.hint
    assert "double quotes" in issue.hint


def test_an_unterminated_document_is_reported_at_the_end_of_the_file() -> None:
    issue = only_issue(GATEWAY + "x = [1, 2\n")
    assert issue.path == "end of file"
    assert issue.message == "invalid TOML: Unclosed array"


# --- robustness: any document gives a config or a ConfigError, never another exception ---------

_HEADERS = [
    "[gateway]",
    "[uplink]",
    "[uplink.tls]",
    "[buffer]",
    "[[serial_ports]]",
    "[[devices]]",
    "[[devices.tags]]",
    "[[rules]]",
]
_STRUCTS: list[type[msgspec.Struct]] = [
    AgentConfig,
    GatewayConfig,
    UplinkConfig,
    TlsConfig,
    BufferConfig,
    SerialPortConfig,
    ModbusTcpDeviceConfig,
    ModbusRtuDeviceConfig,
    TagConfig,
    RuleConfig,
]
_KEYS = sorted({k for cls in _STRUCTS for k in _fields(cls)} | {"driver", "hots", "adress"})
_VALUES = st.one_of(
    st.integers(-3, 70000).map(str),
    st.floats(-1e3, 1e5, allow_nan=False).map(repr),
    st.booleans().map(lambda b: str(b).lower()),
    st.sampled_from(['"S1"', '"modbus_tcp"', '"modbus_rtu"', '"bus a"', '"GT-*"', '"coil"']),
    st.lists(st.integers(0, 9), max_size=3).map(str),
)
_LINES = st.one_of(
    st.sampled_from(_HEADERS),
    st.tuples(st.sampled_from(_KEYS), _VALUES).map(lambda kv: f"{kv[0]} = {kv[1]}"),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_LINES, max_size=30))
def test_any_document_loads_or_raises_a_config_error_with_one_line_per_issue(
    lines: list[str],
) -> None:
    error: ConfigError | None = None
    try:
        loads_config("\n".join(lines), source="fuzz.toml")
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert error.issues
        assert all(i.message for i in error.issues)
        assert len(str(error).splitlines()) == len(error.issues)


# --- error type and formatting -----------------------------------------------------------------


def test_the_error_text_lists_every_issue_on_its_own_line_with_file_and_hint() -> None:
    err = ConfigError("site.toml", [ConfigIssue("a.b", "bad", "fix it"), ConfigIssue("", "x", "")])
    assert str(err) == "site.toml: a.b: bad (hint: fix it)\nsite.toml: x"


def test_a_config_error_without_issues_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one issue"):
        ConfigError("site.toml", [])


def test_a_missing_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert "cannot read the config file: No such file or directory" in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_a_file_that_is_not_utf8_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(GATEWAY.encode() + b'[uplink]\nusername = "m\xfcller"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.issues == [
        ConfigIssue("line 6", "the file is not UTF-8 text", "save it as UTF-8")
    ]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (GATEWAY + tcp("plc-1", "GT-101")).encode())
    assert load_config(path).gateway.site == "S1"


# --- semantic checks (all reported at once) ----------------------------------------------------


def test_duplicate_device_names_are_reported_at_the_second_device() -> None:
    issue = only_issue(GATEWAY + tcp("plc-1", "A") + tcp("plc-1", "B", host="10.0.0.6"))
    assert issue.path == 'devices[1] "plc-1".name'
    assert issue.message == 'duplicate device name "plc-1"'
    assert 'devices[0] "plc-1"' in issue.hint


def test_tag_names_are_global_across_devices() -> None:
    issue = only_issue(GATEWAY + tcp("plc-1", "GT-101") + tcp("plc-2", "GT-101", host="10.0.0.6"))
    assert issue.path == 'devices[1] "plc-2".tags[0] "GT-101".name'
    assert issue.message == 'duplicate tag name "GT-101"'
    assert 'devices[0] "plc-1".tags[0] "GT-101"' in issue.hint


def test_duplicate_serial_port_names_are_reported() -> None:
    text = GATEWAY + serial("bus-a", "/dev/ttyS1") + serial("bus-a", "/dev/ttyS2")
    issue = only_issue(text + rtu("m1", "bus-a", 1, "A"))
    assert issue.path == 'serial_ports[1] "bus-a".name'
    assert issue.message == 'duplicate serial port name "bus-a"'


def test_two_serial_ports_on_one_device_path_are_reported_as_one_bus_with_two_owners() -> None:
    text = GATEWAY + serial("bus-a", "/dev/ttyS1") + serial("bus-b", "/dev/ttyS1")
    issue = only_issue(text + rtu("m1", "bus-a", 1, "A") + rtu("m2", "bus-b", 2, "B"))
    assert issue.path == 'serial_ports[1] "bus-b".path'
    assert (
        issue.message == 'serial port path "/dev/ttyS1" is already used by serial_ports[0] "bus-a"'
    )
    assert "one owner" in issue.hint


def test_an_rtu_device_on_an_unknown_serial_port_lists_the_known_ports() -> None:
    text = GATEWAY + serial("bus-a", "/dev/ttyS1") + serial("bus-b", "/dev/ttyS2")
    issue = only_issue(text + rtu("m1", "bus-c", 1, "A"))
    assert issue.path == 'devices[0] "m1".serial_port'
    assert issue.message == 'unknown serial port "bus-c"'
    assert issue.hint.endswith('known serial ports: "bus-a", "bus-b"')


def test_an_rtu_device_without_any_serial_port_is_told_to_add_one() -> None:
    issue = only_issue(GATEWAY + rtu("m1", "bus-a", 1, "A"))
    assert issue.hint == 'no [[serial_ports]] are configured: add one with name = "bus-a"'


def test_two_devices_with_one_unit_id_on_one_serial_port_are_reported() -> None:
    text = GATEWAY + serial("bus-a", "/dev/ttyS1") + serial("bus-b", "/dev/ttyS2")
    text += rtu("m1", "bus-a", 3, "A") + rtu("m2", "bus-b", 3, "B") + rtu("m3", "bus-a", 3, "C")
    issue = only_issue(text)
    assert issue.path == 'devices[2] "m3".unit_id'
    assert issue.message == 'unit id 3 on serial port "bus-a" is already used by devices[0] "m1"'


def serial_line(name: str, port: str, *tags: str, extra: str = "") -> str:
    body = f"""
[[devices]]
driver = "serial_line"
name = "{name}"
serial_port = "{port}"
{extra}
"""
    return body + "".join(
        f'\n  [[devices.tags]]\n  name = "{t}"\n  field = {i}\n' for i, t in enumerate(tags)
    )


def test_a_serial_line_device_owns_its_port_and_another_device_there_is_reported() -> None:
    text = GATEWAY + serial("gas-line", "/dev/ttyS3")
    text += serial_line("gas", "gas-line", "G1") + rtu("m1", "gas-line", 1, "A")
    issue = only_issue(text)
    assert issue.path == 'devices[1] "m1".serial_port'
    assert 'owned by the serial-line device devices[0] "gas"' in issue.message


def test_serial_line_parse_settings_that_cannot_work_are_reported_by_key() -> None:
    text = GATEWAY + serial("gas-line", "/dev/ttyS3")
    text += serial_line("gas", "gas-line", "G1", extra='parse = "regex"\npattern = "(?P<v>[0-9"')
    paths = [i.path for i in issues_of(text)]
    assert 'devices[0] "gas".pattern' in paths
    assert 'devices[0] "gas".tags[0] "G1".field' in paths  # an index where a group is needed


def test_an_exclusion_running_past_the_last_address_is_reported() -> None:
    text = GATEWAY + tcp("plc", "A", extra="exclude = [{ address = 65530, count = 10 }]")
    assert only_issue(text).path == 'devices[0] "plc".exclude[0].count'


def test_two_tcp_devices_at_one_host_port_and_unit_id_are_reported() -> None:
    text = GATEWAY + tcp("plc-1", "A", unit_id=2) + tcp("plc-2", "B", unit_id=3)
    text += tcp("plc-3", "C", unit_id=2, host="10.0.0.5", extra="port = 5020")
    text += tcp("plc-4", "D", unit_id=2, host="10.0.0.5")
    issue = only_issue(text)
    assert issue.path == 'devices[3] "plc-4".unit_id'
    assert issue.message == 'unit id 2 at 10.0.0.5:502 is already used by devices[0] "plc-1"'


SINGLE_REGISTER = ("bool", "int16", "uint16")


@pytest.mark.parametrize("data_type", SINGLE_REGISTER)
def test_a_single_register_tag_may_sit_at_the_last_address(data_type: str) -> None:
    loads_config(GATEWAY + tcp("plc-1") + tag("T", 65535, f'type = "{data_type}"'))


@pytest.mark.parametrize(
    "data_type", [t for t in typing.get_args(DataType) if t not in SINGLE_REGISTER]
)
def test_a_tag_may_end_at_the_last_register_but_not_run_past_it(data_type: str) -> None:
    count = 4 if "64" in data_type else 2
    last = f'type = "{data_type}"'
    loads_config(GATEWAY + tcp("plc-1") + tag("T", 65536 - count, last))
    issue = only_issue(GATEWAY + tcp("plc-1") + tag("T", 65537 - count, last))
    assert issue.path == 'devices[0] "plc-1".tags[0] "T".address'
    assert "runs past the last address 65535" in issue.message
    assert issue.hint == f"the highest address for {data_type} is {65536 - count}"


@pytest.mark.parametrize("table", ["coil", "discrete"])
def test_bit_tables_need_bool_tags(table: str) -> None:
    issue = only_issue(GATEWAY + tcp("plc-1") + tag("T", 0, f'table = "{table}"\ntype = "int16"'))
    assert issue.path == 'devices[0] "plc-1".tags[0] "T".type'
    assert (
        issue.message == f'{table} tables hold single bits: type "int16" cannot be read from them'
    )
    assert 'type = "bool"' in issue.hint


def test_a_bool_tag_on_a_coil_loads() -> None:
    cfg = loads_config(GATEWAY + tcp("plc-1") + tag("T", 65535, 'table = "coil"\ntype = "bool"'))
    assert cfg.devices[0].tags[0].table == "coil"


@pytest.mark.parametrize("bounds", ["[10, 10]", "[10, 0]"])
def test_a_tag_range_needs_min_below_max(bounds: str) -> None:
    issue = only_issue(GATEWAY + tcp("plc-1") + tag("T", 0, f"range = {bounds}"))
    assert issue.path == 'devices[0] "plc-1".tags[0] "T".range'
    assert "min must be less than max" in issue.message


def test_a_device_timeout_longer_than_its_poll_interval_is_reported() -> None:
    issue = only_issue(GATEWAY + tcp("plc-1", "A", extra="poll_interval_s = 1\ntimeout_s = 1.5"))
    assert issue.path == 'devices[0] "plc-1".timeout_s'
    assert issue.message == "timeout_s 1.5 is longer than poll_interval_s 1"


def test_a_tag_in_an_unknown_poll_group_is_named_with_the_known_groups() -> None:
    issue = only_issue(
        GATEWAY
        + tcp("plc-1", extra='poll_groups = [{ name = "fast", poll_interval_s = 0.5 }]')
        + tag("GT-1", 0, 'poll_group = "fats"')
    )
    assert issue.path == 'devices[0] "plc-1".tags[0] "GT-1".poll_group'
    assert issue.message == 'unknown poll group "fats"'
    assert '"fast"' in issue.hint


def test_a_device_timeout_equal_to_its_poll_interval_loads() -> None:
    loads_config(GATEWAY + tcp("plc-1", "A", extra="poll_interval_s = 2\ntimeout_s = 2"))


def test_a_device_without_tags_is_an_error_with_a_hint() -> None:
    issue = only_issue(GATEWAY + tcp("plc-1"))
    assert issue.path == 'devices[0] "plc-1".tags'
    assert issue.message == "device has no tags"
    assert "[[devices.tags]]" in issue.hint


@pytest.mark.parametrize(
    ("given", "absent"), [("cert_file", "key_file"), ("key_file", "cert_file")]
)
def test_a_client_certificate_needs_both_cert_and_key_files(given: str, absent: str) -> None:
    text = GATEWAY + f'[uplink.tls]\nca_file = "ca.pem"\n{given} = "x"\n' + tcp("plc-1", "A")
    issue = only_issue(text)
    assert issue.path == f"uplink.tls.{given}"
    assert issue.message == f"{given} is set without {absent}"


def test_a_password_file_needs_a_username() -> None:
    issue = only_issue(GATEWAY + '[uplink]\npassword_file = "pw"\n' + tcp("plc-1", "A"))
    assert issue.path == "uplink.password_file"
    assert issue.message == "password_file is set without username"


def test_the_reconnect_minimum_may_not_exceed_the_maximum() -> None:
    text = GATEWAY + "[uplink]\nreconnect_min_s = 60\nreconnect_max_s = 30\n" + tcp("plc-1", "A")
    issue = only_issue(text)
    assert issue.path == "uplink.reconnect_min_s"
    assert issue.message == "reconnect_min_s 60 is larger than reconnect_max_s 30"


def test_every_semantic_error_is_reported_in_one_go_in_file_order() -> None:
    text = GATEWAY + "[uplink]\nusername = 'u'\nreconnect_min_s = 9\nreconnect_max_s = 1\n"
    text += serial("bus-a", "/dev/ttyS1")
    text += tcp("plc-1", "GT-101", extra="timeout_s = 5")
    text += tcp("plc-1", "GT-101", host="10.0.0.9")
    text += rtu("m1", "bus-x", 1)
    with pytest.raises(ConfigError) as info:
        loads_config(text, source="site.toml")
    assert [i.path for i in info.value.issues] == [
        "uplink.reconnect_min_s",
        'devices[0] "plc-1".timeout_s',
        'devices[1] "plc-1".name',
        'devices[1] "plc-1".tags[0] "GT-101".name',
        'devices[2] "m1".serial_port',
        'devices[2] "m1".tags',
    ]
    lines = str(info.value).splitlines()
    assert len(lines) == 6
    assert lines[4] == (
        'site.toml: devices[2] "m1".serial_port: unknown serial port "bus-x" '
        '(hint: did you mean "bus-a"? known serial ports: "bus-a")'
    )


# --- rules (rules.check_rules, converted into ConfigIssues) ------------------------------------


def test_a_rule_naming_an_unknown_tag_is_a_config_issue() -> None:
    issue = only_issue(
        GATEWAY + tcp("plc-1", "GT-101") + '[[rules]]\ntags = ["GT-999"]\nhigh = 1\n'
    )
    assert issue.path == "rules[0].tags[0]"
    assert "GT-999" in issue.message


def test_rule_limits_out_of_order_are_reported_with_config_issues_of_other_tables() -> None:
    text = GATEWAY + tcp("plc-1", "GT-101", extra="timeout_s = 5")
    text += '[[rules]]\ntags = ["GT-101"]\nhigh = 50\nhigh_high = 40\n'
    issues = issues_of(text)
    assert [i.path for i in issues] == ['devices[0] "plc-1".timeout_s', "rules[0].high"]
    assert "high_high" in issues[1].message


# --- paths ---------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory_and_data_dir(tmp_path: Path) -> None:
    text = GATEWAY.replace('id = "G1"', 'id = "G1"\ndata_dir = "state"')
    text += '[uplink]\nusername = "u"\npassword_file = "secrets/pw"\n'
    text += '[uplink.tls]\nca_file = "ca.pem"\ncert_file = "/etc/safeedge/gw.pem"\n'
    text += 'key_file = "gw.key"\n'
    text += '[buffer]\npath = "db/buffer.db"\n' + tcp("plc-1", "A")
    config_path = tmp_path / "site" / "safeedge.toml"
    paths = resolved_paths(loads_config(text), config_path)
    site = tmp_path / "site"
    assert paths.data_dir == site / "state"
    assert paths.buffer_path == site / "state" / "db" / "buffer.db"
    assert paths.buffer_key_file == site / "state" / "buffer.key"
    assert paths.ca_file == site / "ca.pem"
    assert paths.cert_file == Path("/etc/safeedge/gw.pem")
    assert paths.tls_key_file == site / "gw.key"
    assert paths.password_file == site / "secrets" / "pw"


def test_unconfigured_files_resolve_to_none_and_the_default_data_dir_is_absolute() -> None:
    paths = resolved_paths(loads_config(GATEWAY + tcp("plc-1", "A")), Path("safeedge.toml"))
    assert paths.data_dir == Path("/var/lib/safeedge")
    assert paths.buffer_path == Path("/var/lib/safeedge/buffer.db")
    assert (paths.ca_file, paths.cert_file, paths.tls_key_file, paths.password_file) == (None,) * 4


def test_a_relative_config_path_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = GATEWAY.replace('id = "G1"', 'id = "G1"\ndata_dir = "data"') + tcp("plc-1", "A")
    assert resolved_paths(loads_config(text), Path("safeedge.toml")).data_dir == tmp_path / "data"


# --- safeedge check-config -----------------------------------------------------------------------


def run_check_config(path: Path) -> int:
    parser = argparse.ArgumentParser(prog="safeedge")
    cmd_config.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["check-config", str(path)])
    return int(args.func(args))


def test_check_config_prints_a_summary_and_exits_0_for_a_valid_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_check_config(REFERENCE) == 0
    out, err = capsys.readouterr()
    assert out.startswith(
        f"{REFERENCE}: ok: site CN-JS-0042 gateway tank-farm-gw1: "
        "4 devices, 9 tags, 4 rules, 2 serial ports\n"
    )
    assert (
        f"{REFERENCE}: telemetry ~42.2 MiB/day: the buffer holds about 30.3 days" in out
    )  # RECORD_BYTES 152
    assert err == ""


def test_check_config_prints_every_issue_and_exits_78_for_an_invalid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GATEWAY + tcp("plc-1") + tcp("plc-1", "A", host="10.0.0.7"), encoding="utf-8")
    assert run_check_config(path) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f'{path}: devices[0] "plc-1".tags: device has no tags '
        "(hint: add [[devices.tags]] tables under this device, or remove the device)",
        f'{path}: devices[1] "plc-1".name: duplicate device name "plc-1" '
        '(hint: already used by devices[0] "plc-1"; device names must be unique)',
        f"safeedge: {path}: 2 problems, config not valid",
    ]


def test_check_config_names_a_missing_file_and_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nope.toml"
    assert run_check_config(path) == 78
    err = capsys.readouterr().err
    assert f"{path}: cannot read the config file: No such file or directory" in err


def test_safeedge_check_config_is_a_builtin_command_of_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agent.cli import main

    assert main(["check-config", str(REFERENCE)]) == 0
    assert "ok: site CN-JS-0042" in capsys.readouterr().out


def test_an_output_on_an_unknown_device_or_tag_is_a_located_issue() -> None:
    text = (
        GATEWAY
        + tcp("plc", "GT-1")
        + """
[[outputs]]
name = "siren"
device = "nope"
address = 1
  [outputs.when]
  tags = ["GT-9"]
"""
    )
    keys = [i.path for i in issues_of(text)]
    assert keys == ['outputs[0] "siren".device', 'outputs[0] "siren".when.tags']


def test_one_tcp_endpoint_speaks_one_framing() -> None:
    text = GATEWAY + tcp("a", "A1") + tcp("b", "B1", unit_id=2, extra='framing = "rtu"')
    issue = only_issue(text)
    assert issue.path == 'devices[1] "b".framing'
    assert "one framing" in issue.hint
