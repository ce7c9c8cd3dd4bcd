"""Kernels compiled ahead of time into a native module that runs without numba.

Why: importing numba and llvmlite costs the agent ~114 MB of resident memory and loading the
kernels from numba's cache ~32 MB more (``benchmarks/bench_memory.py``), for a few hundred kB of
machine code. ``safeedge warm-cache`` (run by install.sh as the service user) therefore also
compiles each kernel set with ``numba.pycc`` into an extension module in the kernel cache
directory (``NUMBA_CACHE_DIR``). The running agent loads that module and never imports numba.

A module's name carries a fingerprint of everything its machine code depends on: the kernel
sources (the files, byte for byte), numba's, numpy's and Python's versions, the platform and
this host's CPU (model and flags: it is compiled for this CPU). A module built from other
sources, by another numba or for another CPU is therefore never found, let alone loaded; the
JIT path runs instead (numba loads, its own cache serves the kernels) and the reason is kept in
:attr:`Kernels.reason` for the start log and ``safeedge status``.

``SAFEEDGE_KERNELS`` chooses: ``auto`` (the default: native when built, else JIT), ``jit``, or
``native`` (a missing or unloadable module is an error: the tests and commissioning use it to
prove the native path). ``NUMBA_DISABLE_JIT=1`` always means the JIT module, whose functions
are then the plain Python twins.

This module imports no numba; :func:`build` does, when called.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
import sysconfig
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "RULE_KERNELS",
    "KernelSet",
    "Kernels",
    "NativeKernelsError",
    "build",
    "c_array",
    "fingerprint",
    "kernels",
    "module_path",
    "rule_kernels",
]

Impl = Literal["native", "jit"]
_MODES = ("auto", "native", "jit")


class NativeKernelsError(RuntimeError):
    """``SAFEEDGE_KERNELS=native`` and the native module is missing or does not load, or a
    build failed (the message names the module, the directory and the cause)."""


@dataclass(frozen=True, slots=True)
class KernelSet:
    """One set of kernels: ``jit_module`` defines them (numba dispatchers), ``exports`` gives
    each exported function's numba signature (exact array types: C-contiguous, the dtypes the
    callers pass), ``sources`` the modules whose files the machine code depends on."""

    prefix: str
    jit_module: str
    sources: tuple[str, ...]
    exports: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Kernels:
    """The functions of one kernel set as loaded: ``impl`` says which; ``path`` is the native
    module's file (None for JIT); ``reason`` says why the JIT runs (empty for native)."""

    kernel_set: KernelSet
    impl: Impl
    module: ModuleType
    path: Path | None
    reason: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


RULE_KERNELS = KernelSet(
    prefix="safeedge_rules",
    jit_module="rules.kernels",
    sources=("rules.kernels", "rules.layout"),
    exports=(
        (
            "evaluate_batch",
            "UniTuple(i8, 2)(i8, i8, i4[::1], i8[::1], f8[::1], u1[::1], f8[:, ::1], "
            "i8[:, ::1], f8[:, ::1], f8[:, ::1], i8[:, ::1], f8[::1])",
        ),
        (
            "move_rings",
            "void(f8[:, ::1], i8[:, ::1], f8[:, ::1], f8[:, ::1], i8[::1], i8[::1], i8[::1])",
        ),
    ),
)

_lock = threading.Lock()
_loaded: dict[str, Kernels] = {}


def _source_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)  # imports the parent package, not the module
    if spec is None or spec.origin is None:
        raise NativeKernelsError(f"kernel source module {module} not found")
    return Path(spec.origin)


def _cpu() -> bytes:
    """This host's CPU model and feature flags (the first processor of /proc/cpuinfo)."""
    keep = ("model name", "flags", "cpu family", "model", "vendor_id", "Features", "CPU part")
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = []
            for line in f:
                if not line.strip():
                    break
                if line.split(":", 1)[0].strip() in keep:
                    lines.append(line.strip())
            return "\n".join(lines).encode()
    except OSError:
        return platform.processor().encode()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def fingerprint(ks: KernelSet) -> str:
    """16 hex digits over everything the native module's machine code depends on."""
    h = hashlib.sha256()
    for module in ks.sources:
        h.update(module.encode() + b"\0" + _source_file(module).read_bytes() + b"\0")
    for name, sig in ks.exports:
        h.update(f"{name}:{sig}\0".encode())
    h.update(f"numba {_version('numba')} numpy {_version('numpy')}\0".encode())
    h.update(f"{sys.version} {sysconfig.get_config_var('EXT_SUFFIX')}\0".encode())
    h.update(f"{platform.system()} {platform.machine()}\0".encode() + _cpu())
    return h.hexdigest()[:16]


def _checksum_path(module: Path) -> Path:
    return module.with_name(module.name.split(".", 1)[0] + ".sha256")


def module_path(ks: KernelSet, cache_dir: Path) -> Path:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return cache_dir / f"{ks.prefix}_{fingerprint(ks)}{suffix}"


def _mode() -> str:
    mode = os.environ.get("SAFEEDGE_KERNELS", "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise NativeKernelsError(f"SAFEEDGE_KERNELS={mode!r}: use one of {', '.join(_MODES)}")
    return mode


def _load_native(ks: KernelSet, cache_dir: Path) -> tuple[Kernels | None, str]:
    path = module_path(ks, cache_dir)
    if not path.is_file():
        return None, f"no native module {path.name} in {cache_dir} (safeedge warm-cache builds it)"
    name = path.name.split(".", 1)[0]
    # a torn or altered file must not reach dlopen: a truncated ELF dies with SIGBUS there
    try:
        want = _checksum_path(path).read_text(encoding="ascii").strip()
        got = hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"native module {path} has no readable checksum ({exc}); rebuild it"
    if got != want:
        return None, f"native module {path} did not load: checksum mismatch (a damaged file)"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            return None, f"native module {path} is not an extension module"
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:
        return None, f"native module {path} did not load: {exc}"
    missing = [n for n, _ in ks.exports if not callable(getattr(module, n, None))]
    if missing:
        return None, f"native module {path} lacks {', '.join(missing)}"
    return Kernels(ks, "native", module, path, ""), ""


def kernels(ks: KernelSet) -> Kernels:
    """The kernel set's functions, loaded once per process (thread-safe): the native module
    when ``SAFEEDGE_KERNELS`` allows it and one was built for these sources here, else the JIT
    module. Raises :class:`NativeKernelsError` for ``SAFEEDGE_KERNELS=native`` without one."""
    with _lock:
        got = _loaded.get(ks.prefix)
        if got is not None:
            return got
        mode = _mode()
        reason = "SAFEEDGE_KERNELS=jit"
        if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
            reason = "NUMBA_DISABLE_JIT is set"
            if mode == "native":
                raise NativeKernelsError("SAFEEDGE_KERNELS=native contradicts NUMBA_DISABLE_JIT")
        elif mode != "jit":
            cache = os.environ.get("NUMBA_CACHE_DIR", "")
            if not cache:
                reason = "NUMBA_CACHE_DIR is not set (the native module lives there)"
            else:
                native, reason = _load_native(ks, Path(cache))
                if native is not None:
                    _loaded[ks.prefix] = native
                    return native
            if mode == "native":
                raise NativeKernelsError(f"SAFEEDGE_KERNELS=native: {reason}")
        got = Kernels(ks, "jit", importlib.import_module(ks.jit_module), None, reason)
        _loaded[ks.prefix] = got
        return got


def c_array(a: NDArray[Any], dtype: type[np.generic]) -> NDArray[Any]:
    """``a`` as the kernels take it: C-contiguous, of ``dtype`` and writeable (the native
    module accepts exactly its signature's types; for the JIT a read-only array would compile
    a second kernel in the middle of a tick)."""
    out = np.ascontiguousarray(a, dtype=dtype)
    return out if out.flags.writeable else out.copy()


def rule_kernels() -> Kernels:
    """:data:`RULE_KERNELS` as loaded (see :func:`kernels`)."""
    return kernels(RULE_KERNELS)


def build(ks: KernelSet, cache_dir: Path) -> Path:
    """Compile the kernel set with ``numba.pycc`` for this host's CPU into ``cache_dir`` and
    return the module's path. Written under a temporary name and renamed into place, so a
    crash never leaves a partial module; modules of the same set with another fingerprint are
    removed afterwards. A SHA-256 of the module is written beside it (``<name>.sha256``) and
    checked before every load, so a damaged file is never handed to the dynamic loader.
    Needs a C compiler (pycc links numba's helpers); raises
    :class:`NativeKernelsError` naming the cause when the build fails."""
    target = module_path(ks, cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        from numba import pycc
    except ImportError as exc:
        raise NativeKernelsError(f"numba.pycc is not available: {exc}") from exc
    jit = importlib.import_module(ks.jit_module)
    name = target.name.split(".", 1)[0]
    with tempfile.TemporaryDirectory(prefix=f".{ks.prefix}-", dir=cache_dir) as tmp:
        try:  # pycc looks for the C compiler when constructed
            cc: Any = pycc.CC(name)  # type: ignore[attr-defined,no-untyped-call]
            cc.output_dir = tmp
            cc.target_cpu = "host"
            cc.verbose = False
            for export, sig in ks.exports:
                cc.export(export, sig)(getattr(jit, export).py_func)
            cc.compile()
        except Exception as exc:  # distutils/compiler errors come in many classes
            first = (str(exc).strip().splitlines() or [""])[0]
            raise NativeKernelsError(
                f"building {target.name} failed: {type(exc).__name__}: {first}"
            ) from exc
        built = [p for p in Path(tmp).iterdir() if p.name.startswith(name + ".")]
        if len(built) != 1:
            raise NativeKernelsError(f"building {target.name} left {[p.name for p in built]}")
        digest = Path(tmp) / "checksum"
        digest.write_text(hashlib.sha256(built[0].read_bytes()).hexdigest() + "\n")
        for f in (built[0], digest):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _checksum_path(target).unlink(missing_ok=True)  # no old checksum for the new module
        os.replace(built[0], target)
        os.replace(digest, _checksum_path(target))
    keep = {target, _checksum_path(target)}
    for old in cache_dir.glob(f"{ks.prefix}_*"):
        if old not in keep and old.is_file():
            old.unlink(missing_ok=True)
    return target
