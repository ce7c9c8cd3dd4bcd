"""How the uplink ends a connection at stop so that ``R/state`` is left offline either way.

Invariant: after :func:`end_connection`, the broker holds ``online: false`` for this gateway:
either the offline state was acknowledged (a normal DISCONNECT, the will is discarded) or the
broker is made to publish the will (the same offline state): MQTT 5's DISCONNECT with reason
0x04 "Disconnect with Will Message", on MQTT 3.1.1 a connection dropped without DISCONNECT.
A normal DISCONNECT while the offline state is unacknowledged could leave ``R/state``
retained online: paho may still hold it unsent behind a full in-flight window.
"""

from __future__ import annotations

import contextlib
import socket

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["end_connection"]


def end_connection(client: mqtt.Client, *, v5: bool, offline_acked: bool) -> None:
    """Start ending ``client``'s connection (paho closes the socket when it is done)."""
    if offline_acked:
        client.disconnect()  # paho closes the socket once DISCONNECT is written
    elif v5:
        will = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        client.disconnect(reasoncode=will)
    else:
        shutdown = getattr(client.socket(), "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(OSError):
                shutdown(socket.SHUT_RDWR)  # paho reads EOF and closes the socket
