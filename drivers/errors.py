"""The drivers' exceptions, named by what the caller should do about them.

::

    DriverError                  base of everything the drivers raise on purpose
    ├── DeviceUnavailable        transient: no answer, timeout, connection refused or lost;
    │                            retry on the next poll (samples get Quality.BAD_COMM)
    ├── ProtocolError            the device answered, but not with data: a Modbus exception
    │                            response or a malformed reply; affects the points of that one
    │                            request (samples get Quality.BAD_DEVICE)
    └── DriverConfigError        permanent, needs a human: the config cannot work (a tag that
                                 does not fit a request, a bool type on a register table...)

pymodbus' own exceptions are translated into these in exactly one place
(``drivers.modbus_io.translated``), the serial line's OS errors in ``drivers.serial_line``;
always chained (``raise ... from exc``).
"""

from __future__ import annotations

__all__ = ["DeviceUnavailable", "DriverConfigError", "DriverError", "ProtocolError"]


class DriverError(Exception):
    """Base of the drivers' exceptions."""


class DeviceUnavailable(DriverError):  # noqa: N818 (name fixed by the design)
    """The device could not be reached or did not answer in time (transient: retry later)."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"device {device!r} unavailable: {reason}")
        self.device = device
        self.reason = reason


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
