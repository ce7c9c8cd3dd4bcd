"""The drivers' exceptions, named by what the caller should do about them.

::

    DriverError                  base of everything the drivers raise on purpose
    ├── DeviceUnavailable        transient: no answer, timeout, connection refused or lost;
    │                            retry on the next poll (samples get Quality.BAD_COMM)
    ├── ProtocolError            the device answered, but not with data: a Modbus exception
    │                            response; affects the points of that one request (samples
    │                            get Quality.BAD_DEVICE)
    ├── BadReply                 a framed reply that does not answer the request (other
    │                            function code, byte count, unit id, a write echo): that
    │                            request's samples get Quality.BAD_COMM, the reason is counted
    └── DriverConfigError        permanent, needs a human: the config cannot work (a tag that
                                 does not fit a request, a bool type on a register table...)

OS errors are translated into these where they happen: the Modbus links' socket and port errors
in ``drivers.mblink`` (:func:`drivers.mbchannel.os_error_kind` names them), the serial line's in
``drivers.serial_line``; always chained (``raise ... from exc``). No pymodbus client is used.

``DeviceUnavailable.kind`` names why, for events and the commissioning probe: ``timeout``,
``refused``, ``no_route``, ``closed`` (reset or EOF), ``port_missing``, ``port_busy``,
``port_settings`` (the port refused its line settings),
``framing``, ``crc``, ``exception:<code>`` (a gateway's 10/11: the unit behind it is gone).
"""

from __future__ import annotations

__all__ = ["BadReply", "DeviceUnavailable", "DriverConfigError", "DriverError", "ProtocolError"]


class DriverError(Exception):
    """Base of the drivers' exceptions."""


class DeviceUnavailable(DriverError):  # noqa: N818 (name fixed by the design)
    """The device could not be reached or did not answer in time (transient: retry later)."""

    def __init__(self, device: str, reason: str, *, kind: str = "timeout") -> None:
        super().__init__(f"device {device!r} unavailable ({kind}): {reason}")
        self.device = device
        self.reason = reason
        self.kind = kind


class BadReply(DriverError):  # noqa: N818 (a signal, not a failure name)
    """A reply that does not answer the request; ``reason`` is a counter key
    (``function_code``, ``write_echo``, ``byte_count``, ``length``, ``unit_id``)."""

    def __init__(self, device: str, reason: str, detail: str) -> None:
        super().__init__(f"device {device!r}: bad reply ({reason}): {detail}")
        self.device = device
        self.reason = reason
        self.detail = detail


class ProtocolError(DriverError):
    """The device answered one request without usable data.

    ``exception_code`` is the Modbus exception code (2 = illegal data address, ...) or None when
    the reply was malformed rather than an exception response.
    """

    def __init__(self, device: str, reason: str, *, exception_code: int | None = None) -> None:
        super().__init__(f"device {device!r}: {reason}")
        self.device = device
        self.reason = reason
        self.exception_code = exception_code


class DriverConfigError(DriverError):
    """The configuration cannot work; a human must change it (permanent)."""
