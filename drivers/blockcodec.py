"""Vectorised decoding of a whole poll: every planned request of a device decoded at once.

Sans-I/O. :class:`PollDecoder` is compiled once per plan (a tuple of
:class:`~drivers.planner.ReadRequest`); a poll copies each reply into one register buffer and one
bit buffer (at :meth:`PollDecoder.slice`) and calls
:meth:`PollDecoder.decode` once, so the Python work per request is one slice assignment and the
work per tag is numpy's.

How registers become numbers: the register buffer is turned into its wire bytes (big-endian,
register after register); for each data type, a precomputed ``(tags, bytes)`` index matrix
gathers every tag's bytes *already in big-endian order* — the tag's word order is baked into
its row — and the gathered matrix is viewed as that big-endian type. So one fancy index and one
view per data type decode every tag of that type in the poll, whatever their word orders.

Contract: :meth:`PollDecoder.decode` returns, for every planned point, exactly what
:func:`drivers.codec.decode_tag` returns for that tag and its registers (value and quality, bit
for bit; property-tested), including scale/offset, 4–20 mA spans with NAMUR NE43 faults, ranges
and non-finite floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from drivers.codec import NE43_HIGH_MA, NE43_LOW_MA, is_exact_int, word_count
from drivers.config import DataType, TagConfig, WordOrder
from drivers.planner import ReadRequest
from drivers.types import Quality

__all__ = ["PollDecoder", "wire_byte_index"]

_BIG_ENDIAN: dict[DataType, str] = {
    "int16": ">i2",
    "uint16": ">u2",
    "int32": ">i4",
    "uint32": ">u4",
    "int64": ">i8",
    "uint64": ">u8",
    "float32": ">f4",
    "float64": ">f8",
}


def wire_byte_index(first_register: int, data_type: DataType, order: WordOrder) -> list[int]:
    """Indices into the wire bytes of a register block that spell the value starting at
    ``first_register`` in big-endian order (see :mod:`drivers.codec` for the word orders)."""
    words = word_count(data_type)
    reverse_words = order in ("CDAB", "DCBA")
    swap_bytes = order in ("BADC", "DCBA")
    out: list[int] = []
    for j in range(words):
        r = first_register + (words - 1 - j if reverse_words else j)
        out += [2 * r + 1, 2 * r] if swap_bytes else [2 * r, 2 * r + 1]
    return out


@dataclass(frozen=True, slots=True)
class _Gather:
    """Points of one data type: where their bytes are, where their raw values go."""

    dtype: np.dtype[np.generic]
    byte_index: NDArray[np.intp]  # (points, bytes)
    slot: NDArray[np.intp]  # positions in the decoder's point order


class PollDecoder:
    """Decodes the replies of one plan (see the module contract).

    Point order: requests in plan order, points in request order. ``point_tag[i]`` is the tag
    position (in the device's tag list) of point ``i`` and ``point_request[i]`` its request.
    """

    def __init__(
        self, tags: Sequence[TagConfig], requests: Sequence[ReadRequest], default_order: WordOrder
    ) -> None:
        reg_base: list[int] = []
        bit_base: list[int] = []
        regs = bits = 0
        self._slices: list[slice] = []  # of each request in its buffer
        for req in requests:
            start = bits if req.is_bits else regs
            reg_base.append(regs)
            bit_base.append(bits)
            if req.is_bits:
                bits += req.count
            else:
                regs += req.count
            self._slices.append(slice(start, start + req.count))
        self.registers = regs
        self.bits = bits
        point_tag: list[int] = []
        point_request: list[int] = []
        byte_rows: dict[DataType, tuple[list[list[int]], list[int]]] = {}
        bool_regs: tuple[list[int], list[int]] = ([], [])  # (register, slot)
        bit_regs: tuple[list[int], list[int], list[int]] = ([], [], [])  # (register, bit, slot)
        bit_points: tuple[list[int], list[int]] = ([], [])  # (bit, slot)
        exact: list[tuple[int, list[int], bool]] = []  # (slot, byte index, signed)
        for k, req in enumerate(requests):
            for p in req.points:
                slot = len(point_tag)
                point_tag.append(p.tag)
                point_request.append(k)
                tag = tags[p.tag]
                if req.is_bits:
                    bit_points[0].append(bit_base[k] + p.offset)
                    bit_points[1].append(slot)
                elif tag.bit is not None:
                    bit_regs[0].append(reg_base[k] + p.offset)
                    bit_regs[1].append(tag.bit)
                    bit_regs[2].append(slot)
                elif tag.type == "bool":
                    bool_regs[0].append(reg_base[k] + p.offset)
                    bool_regs[1].append(slot)
                else:
                    order = tag.byte_order or default_order
                    rows, slots = byte_rows.setdefault(tag.type, ([], []))
                    rows.append(wire_byte_index(reg_base[k] + p.offset, tag.type, order))
                    slots.append(slot)
                    if is_exact_int(tag):
                        exact.append((slot, rows[-1], tag.type == "int64"))
        self.point_tag = np.asarray(point_tag, dtype=np.intp)
        self.point_request = np.asarray(point_request, dtype=np.intp)
        self._gathers = tuple(
            _Gather(
                np.dtype(_BIG_ENDIAN[t]),
                np.asarray(rows, dtype=np.intp).reshape(len(rows), -1),
                np.asarray(slots, dtype=np.intp),
            )
            for t, (rows, slots) in byte_rows.items()
        )
        self._bool_regs = tuple(np.asarray(a, dtype=np.intp) for a in bool_regs)
        self._bit_regs = tuple(np.asarray(a, dtype=np.intp) for a in bit_regs)
        self._bit_points = tuple(np.asarray(a, dtype=np.intp) for a in bit_points)
        self._exact = tuple(exact)
        self._compile_engineering([tags[i] for i in point_tag])

    def _compile_engineering(self, point_tags: Sequence[TagConfig]) -> None:
        n = len(point_tags)
        self._scale = np.fromiter((t.scale for t in point_tags), np.float64, n)
        self._offset = np.fromiter((t.offset for t in point_tags), np.float64, n)
        ranged = [(i, t.range) for i, t in enumerate(point_tags) if t.range is not None]
        self._range_slot = np.asarray([i for i, _ in ranged], dtype=np.intp)
        self._range_lo = np.asarray([r[0] for _, r in ranged], dtype=np.float64)
        self._range_hi = np.asarray([r[1] for _, r in ranged], dtype=np.float64)
        loops = [(i, t.current_loop) for i, t in enumerate(point_tags) if t.current_loop]
        self._loop_slot = np.asarray([i for i, _ in loops], dtype=np.intp)
        # the differences are computed here in Python floats exactly as codec does inline
        self._raw4 = np.asarray([c.raw_span[0] for _, c in loops], dtype=np.float64)
        self._raw_d = np.asarray([c.raw_span[1] - c.raw_span[0] for _, c in loops], np.float64)
        self._eng4 = np.asarray([c.span[0] for _, c in loops], dtype=np.float64)
        self._eng_d = np.asarray([c.span[1] - c.span[0] for _, c in loops], np.float64)

    def __len__(self) -> int:
        return len(self.point_tag)

    def new_buffers(self) -> tuple[NDArray[np.uint16], NDArray[np.bool_]]:
        """Zeroed register and bit buffers for one poll."""
        return np.zeros(self.registers, dtype=np.uint16), np.zeros(self.bits, dtype=np.bool_)

    def slice(self, request: int) -> slice:
        """Where the reply of request number ``request`` goes: in the register buffer for a
        register read, in the bit buffer for a bit read."""
        return self._slices[request]

    def exact(self, registers: NDArray[np.uint16]) -> list[tuple[int, int]]:
        """``(slot, integer)`` of every plain int64/uint64 point, exactly (no float64)."""
        if not self._exact:
            return []
        wire = registers.astype(">u2").tobytes()
        return [
            (slot, int.from_bytes(bytes(wire[i] for i in index), "big", signed=signed))
            for slot, index, signed in self._exact
        ]

    def decode(
        self, registers: NDArray[np.uint16], bits: NDArray[np.bool_]
    ) -> tuple[NDArray[np.float64], NDArray[np.uint8]]:
        """(value, quality) of every point, in point order (see the module contract)."""
        with np.errstate(all="ignore"):  # NaN/inf are expected here: they become BAD_RANGE
            raw = np.empty(len(self.point_tag), dtype=np.float64)
            wire = registers.astype(">u2").view(np.uint8)
            for g in self._gathers:
                raw[g.slot] = wire[g.byte_index].view(g.dtype).ravel()
            reg, slot = self._bool_regs
            raw[slot] = registers[reg] != 0
            reg, bit, slot = self._bit_regs
            raw[slot] = (registers[reg] >> bit) & 1
            where, slot = self._bit_points
            raw[slot] = bits[where]
            value = raw * self._scale + self._offset  # always: -0.0 * 1 + 0 is 0.0, as in codec
            bad = ~np.isfinite(value)
            if len(self._loop_slot):
                s = self._loop_slot
                frac = (value[s] - self._raw4) / self._raw_d
                ma = 4.0 + 16.0 * frac
                bad[s] |= (ma < NE43_LOW_MA) | (ma > NE43_HIGH_MA)
                eng = self._eng4 + frac * self._eng_d
                value[s] = eng
                bad[s] |= ~np.isfinite(eng)
            if len(self._range_slot):
                s = self._range_slot
                v = value[s]
                bad[s] |= ~((self._range_lo <= v) & (v <= self._range_hi))
        value[bad] = np.nan
        quality = np.where(bad, np.uint8(Quality.BAD_RANGE), np.uint8(Quality.GOOD))
        return value, quality.astype(np.uint8, copy=False)
