"""The MQTT uplink: a sans-I/O session core and an adapter running paho on the event loop.

``from agent.uplink import Uplink, PublishResult, ...`` keeps working as before the split.
"""

from agent.uplink.client import Uplink
from agent.uplink.session import (
    REASON_LOST,
    Outcome,
    PublishResult,
    Session,
    UplinkConfigError,
    UplinkStats,
    backoff_delay,
    mqtt_keepalive,
    outcome_of,
)

__all__ = [
    "REASON_LOST",
    "Outcome",
    "PublishResult",
    "Session",
    "Uplink",
    "UplinkConfigError",
    "UplinkStats",
    "backoff_delay",
    "mqtt_keepalive",
    "outcome_of",
]
