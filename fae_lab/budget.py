"""Will it fit? Bytes a command will need, against what the machine has, before allocating.

A flag like ``--max-steps 10000000000`` or ``--generate-resolution 100000`` is a valid
number that ends, minutes later, in a ``MemoryError`` or a full disk. Here every large
allocation is estimated from the settings alone and compared with what is available:

* **host memory** (``/proc/meminfo`` MemAvailable, a cgroup limit if lower): the data
  ``N x T x R x R`` while it is generated or loaded, and the schedules' step arrays;
* **device memory** (``memory_stats()`` of the first JAX device, where JAX reports one;
  on the CPU backend the device is host memory): the training and test fields and the
  activations of one training step;
* **disk** (``shutil.disk_usage`` of the output's deepest existing directory): the run
  store as it stands when the run ends (uncompressed, an upper bound).

Each :class:`Need` names the flag that drives it, so a refusal is one line such as
``--max-steps 10000000000: the run store would need 7.2 TiB on disk, 52 GiB free at runs``.
The estimates are orders of magnitude, meant to catch what cannot fit, not to pack memory.
:func:`over_budget` is pure (numbers in, the first refusal out) and JAX-free.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fae_lab.errors import UsageError

HOST, DEVICE, DISK = "memory", "device memory", "disk"
# What each resource is called in a refusal: "... need 3 TiB of memory, 20 GiB available".
_PHRASE = {HOST: ("of memory", "available"), DEVICE: ("of device memory", "available"),
           DISK: ("on disk", "free")}
FLOAT32, FLOAT64, INT64 = 4, 8, 8
# Activations kept per unit of width for the backward pass: the activation and its gradient
# (a low count on purpose, XLA may keep the pre-activation too: a refusal must be sure).
ACTIVATION_COPIES = 2


@dataclass(frozen=True)
class Need:
    """``bytes`` of ``resource`` for ``what``, driven by ``flag`` (shown with its value)."""

    resource: str  # HOST, DEVICE or DISK
    bytes: float
    what: str
    flag: str


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units up to EiB, three significant digits."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = 0 if n < 1024 else min(int(math.log(n, 1024)), len(units) - 1)
    value = n / 1024**power
    return f"{value:.0f} {units[power]}" if power == 0 or value >= 100 else f"{value:.3g} {units[power]}"


def over_budget(needs: Iterable[Need], available: Mapping[str, float | None],
                where: Mapping[str, str] | None = None) -> str | None:
    """The refusal line for the first resource whose needs exceed what is ``available``.

    Needs of one resource add up; the line names the flag of the largest of them. A resource
    whose availability is None (unknown) is not checked. ``where`` optionally says where a
    resource was measured (``{DISK: "runs"}`` -> "... free at runs").
    """
    needs = list(needs)
    for resource in (HOST, DEVICE, DISK):
        mine = [n for n in needs if n.resource == resource]
        have = available.get(resource)
        if not mine or have is None:
            continue
        total = sum(n.bytes for n in mine)
        if total > have:
            largest = max(mine, key=lambda n: n.bytes)
            amount, verb = _PHRASE[resource]
            place = f" at {where[resource]}" if where and resource in where else ""
            return (f"{largest.flag}: {largest.what} would need {format_bytes(largest.bytes)} "
                    f"{amount}" + (f" ({format_bytes(total)} in all)" if total > 1.01 * largest.bytes else "")
                    + f", {format_bytes(have)} {verb}{place}")
    return None


# ----------------------------------------------------------------------------- what is there


def available_host_memory() -> int | None:
    """Bytes of memory a new allocation can get: MemAvailable, or a lower cgroup v2 limit."""
    available = None
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as stream:
            limit = stream.read().strip()
        with open("/sys/fs/cgroup/memory.current") as stream:
            current = int(stream.read().strip())
        if limit != "max":
            available = min(available, int(limit) - current)
    except (OSError, ValueError):
        pass
    return available


def available_device_memory() -> int | None:
    """Free bytes on the first JAX device where JAX is already imported and reports them
    (a GPU does; the CPU backend does not: there the device's arrays live in host memory)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # a backend without memory statistics
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def free_disk(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system of ``path``'s deepest existing directory."""
    from fae_lab.destination import nearest_existing

    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return None


def refuse_if_over(needs: Iterable[Need], *, disk_at: str | os.PathLike | None = None) -> None:
    """Raise :class:`UsageError` when the ``needs`` do not fit this machine.

    Device needs count against host memory when JAX reports no device memory (CPU backend).
    """
    needs = list(needs)
    device = available_device_memory()
    if device is None:
        needs = [Need(HOST, n.bytes, n.what, n.flag) if n.resource == DEVICE else n for n in needs]
    available = {HOST: available_host_memory(), DEVICE: device,
                 DISK: free_disk(disk_at) if disk_at is not None else None}
    where = {DISK: str(disk_at)} if disk_at is not None else None
    line = over_budget(needs, available, where)
    if line:
        raise UsageError(line)


# ----------------------------------------------------------------------------- data


def generation_needs(n_samples: int, n_scales: int, resolution: int, flag_of: Mapping[str, str]
                     ) -> list[Need]:
    """Host memory of :func:`fae_lab.data.generate.generate_microstructures`.

    Peak: the sharp fields ``(N, R, R)`` float64, ``fields (N, T, R, R)`` float32, their
    float32 copy in validation and its finiteness mask (1 byte): N R^2 (8 + 9 T) bytes.
    ``flag_of`` maps "n_samples" and "resolution" to the flags as shown.
    """
    cells = n_samples * resolution**2
    total = cells * (FLOAT64 + (2 * FLOAT32 + 1) * n_scales)
    flag = larger_departure({"resolution": (resolution**2, 64**2), "n_samples": (n_samples, 256)},
                             flag_of)
    return [Need(HOST, total, f"the generated data ({n_samples} x {n_scales} x {resolution}^2)", flag)]


def loaded_data_needs(file_bytes: int, n_values: int, flag: str) -> list[Need]:
    """Host memory of :func:`fae_lab.data.npz.load_npz`: the arrays as stored, then fields
    as float32 and a finiteness mask, 5 bytes per value. ``flag`` names the file."""
    return [Need(HOST, file_bytes + 5 * n_values, "loading the data", flag)]


def larger_departure(factors: Mapping[str, tuple[float, float]], flag_of: Mapping[str, str]) -> str:
    """The flag whose factor is the most times its default: the one that made a need large."""
    name = max(factors, key=lambda k: factors[k][0] / factors[k][1])
    return flag_of[name]
