"""The multiscale data file (docs/data-file.md): load, validate, save.

A file holds ``fields`` ``(N, T, R, R)`` (or ``(N, R, R)``, read as T = 1): N samples of T scales
on the periodic R x R grid over [0, 1)^2, ``resolution`` R, ``times`` ``(T,)`` increasing, and
optionally ``sigmas`` ``(T,)`` (Gaussian filter widths in domain lengths) and
``held_out_indices`` (scales never trained on in multi-scale mode). Other keys are ignored.

Every broken rule raises :class:`fae_lab.errors.DataFileError` naming the key and what was
expected, so a command can refuse the file in one line. NumPy only.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fae_lab.errors import DataFileError, UsageError


@dataclass(frozen=True, eq=False)
class MultiscaleData:
    """N samples of a field at T scales on the periodic R x R grid.

    ``fields[i, t, iy, ix]`` is sample i at scale t at the grid point (x, y) = (ix/R, iy/R);
    ``times[t]`` is the scale parameter t (``sigma**2 / 2`` for a Gaussian filter of width
    sigma); ``held_out_indices`` is what the file says (None when it says nothing).
    """

    fields: np.ndarray  # (N, T, R, R) float32
    times: np.ndarray  # (T,) float64
    sigmas: np.ndarray | None  # (T,) float64
    held_out_indices: tuple[int, ...] | None
    source: str

    @property
    def n_samples(self) -> int:
        return int(self.fields.shape[0])

    @property
    def n_scales(self) -> int:
        return int(self.fields.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.fields.shape[-1])


# The keys of a data file (docs/data-file.md; others in a file are ignored).
KEYS = ("fields", "resolution", "times", "sigmas", "held_out_indices")


class UnreadableDataFile(DataFileError):
    """A path that is not a readable .npz archive at all (no key to name)."""

    def __init__(self, path: str, expected: str):
        self.path, self.key, self.expected = path, "", expected
        UsageError.__init__(self, f"{path}: {expected}")


def check_file(path: str | os.PathLike) -> dict[str, ArrayHeader]:
    """What can be told of a data file without loading an array: that it is an ``.npz``
    archive, whose headers hold numbers (no pickled objects), claim no more bytes than the
    archive holds, and fit in memory. Returns the headers; refuses (:class:`DataFileError`,
    or :class:`UsageError` for memory) in one line."""
    name = str(path)
    if not os.path.exists(name):
        raise UnreadableDataFile(name, "no such file")
    if os.path.isdir(name):
        raise UnreadableDataFile(name, "is a directory, expected an .npz file")
    try:
        with open(name, "rb") as stream:
            magic = stream.read(6)
    except OSError as err:
        raise UnreadableDataFile(name, f"cannot be read ({_reason(err)})") from None
    if magic == b"\x93NUMPY":
        raise UnreadableDataFile(name, "is a single .npy array; expected an .npz archive of "
                                       "named arrays (numpy.savez)")
    if not magic.startswith(b"PK"):
        raise UnreadableDataFile(name, "is not an .npz archive (a zip of named arrays written "
                                       "by numpy.savez)")
    headers = _checked_headers(name)
    from fae_lab.budget import loaded_data_needs, refuse_if_over

    fields = headers.get("fields")
    n_values = math.prod(fields.shape) if fields is not None else 0
    refuse_if_over(loaded_data_needs(sum(h.nbytes for h in headers.values()), n_values, name))
    return headers


def load_npz(path: str | os.PathLike) -> MultiscaleData:
    """Read and validate a data file (docs/data-file.md); ``fields`` become float32 ``(N, T, R, R)``."""
    name = str(path)
    check_file(name)
    try:
        archive = np.load(name, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UnreadableDataFile(name, f"is not a readable .npz archive ({_reason(err)})") from None
    with archive:
        arrays = {}
        for key in KEYS:
            if key in archive.files:
                try:
                    arrays[key] = archive[key]
                except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                    raise DataFileError(name, key, f"could not be read ({_reason(err)})") from None
    return validate_arrays(arrays, name)


@dataclass(frozen=True)
class ArrayHeader:
    """What an ``.npy`` member's header says: ``shape`` and ``dtype``, and the bytes the
    member holds after its header (``stored``)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    stored: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_headers(path: str | os.PathLike) -> dict[str, ArrayHeader]:
    """The headers of the arrays this module reads (:data:`KEYS`) found in an ``.npz`` file,
    read without loading any array. Raises ``zipfile.BadZipFile``/``OSError``/``ValueError``
    on an archive or a header that cannot be read."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for key in KEYS:
            member = f"{key}.npy"
            if member not in names:
                continue
            info = archive.getinfo(member)
            with archive.open(info) as stream:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                elif version in ((2, 0), (3, 0)):  # 3.0 differs only in the header's encoding
                    shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                else:
                    raise ValueError(f"{member}: unknown .npy format version {version}")
                headers[key] = ArrayHeader(tuple(int(s) for s in shape), np.dtype(dtype),
                                           info.file_size - stream.tell())
    return headers


def _checked_headers(name: str) -> dict[str, ArrayHeader]:
    """:func:`read_headers`, refusing a member that holds Python objects (loading it would
    unpickle code) or whose header claims more bytes than the member holds (a truncated or
    forged file: loading it would allocate the claimed size first)."""
    try:
        headers = read_headers(name)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise UnreadableDataFile(name, f"is not a readable .npz archive ({_reason(err)})") from None
    for key, header in headers.items():
        if header.dtype.hasobject:
            raise DataFileError(name, key, f"holds Python objects (dtype {header.dtype}); "
                                           "expected numbers (the file is not loaded with pickle)")
        if header.nbytes > header.stored:
            raise DataFileError(name, key, f"header claims shape {header.shape} of {header.dtype} "
                                           f"({_size(header.nbytes)}) but the file holds "
                                           f"{_size(header.stored)} of it (truncated or corrupt)")
    return headers


def _size(n: int) -> str:
    from fae_lab.budget import format_bytes

    return format_bytes(n)


def validate_arrays(arrays: Mapping[str, np.ndarray], source: str) -> MultiscaleData:
    """Check the arrays of a file against docs/data-file.md and build :class:`MultiscaleData`.

    ``source`` names the file in error messages.
    """
    fields = _fields(arrays, source)
    n_scales, resolution = fields.shape[1], fields.shape[-1]
    _check_resolution(arrays, source, resolution)
    times = _times(arrays, source, n_scales)
    sigmas = _sigmas(arrays, source, n_scales)
    held_out = _held_out(arrays, source, n_scales)
    return MultiscaleData(fields, times, sigmas, held_out, source)


def save_npz(path: str | os.PathLike, data: MultiscaleData, *, overwrite: bool = False) -> None:
    """Write ``data`` as a data file (docs/data-file.md).

    An existing file is refused unless ``overwrite``. The archive is written to a temporary
    file beside ``path`` and moved into place, so no half-written file is ever visible.
    """
    name = str(path)
    if os.path.isdir(name):
        raise UsageError(f"{name}: is a directory, expected a file name for the .npz file")
    if os.path.exists(name) and not overwrite:
        raise UsageError(f"{name}: already exists; refusing to overwrite it (use --overwrite)")
    arrays: dict[str, np.ndarray] = {
        "fields": np.asarray(data.fields, dtype=np.float32),
        "resolution": np.asarray(data.resolution, dtype=np.int64),
        "times": np.asarray(data.times, dtype=np.float64),
    }
    if data.sigmas is not None:
        arrays["sigmas"] = np.asarray(data.sigmas, dtype=np.float64)
    if data.held_out_indices is not None:
        arrays["held_out_indices"] = np.asarray(data.held_out_indices, dtype=np.int64)
    validate_arrays(arrays, name)  # never write a file that load_npz would refuse

    directory = Path(name).resolve().parent
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{Path(name).name}.", suffix=".tmp",
                                         dir=directory)
    try:
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would make the data file private
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        _move_into_place(temporary, name, overwrite)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _move_into_place(temporary: str, name: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, name)
        return
    # A hard link fails if the target appeared meanwhile, where os.replace would clobber it.
    try:
        os.link(temporary, name)
    except FileExistsError:
        raise UsageError(f"{name}: already exists; refusing to overwrite it (use --overwrite)") from None
    except OSError:
        if os.path.exists(name):
            raise UsageError(
                f"{name}: already exists; refusing to overwrite it (use --overwrite)"
            ) from None
        os.replace(temporary, name)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _real_numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "iuf"


def _fields(arrays: Mapping[str, np.ndarray], source: str) -> np.ndarray:
    expected = "float array of shape (N, T, R, R) or (N, R, R)"
    if "fields" not in arrays:
        raise DataFileError(source, "fields", f"missing; expected a {expected}")
    fields = np.asarray(arrays["fields"])
    if not (_real_numeric(fields) or fields.dtype.kind == "b"):
        raise DataFileError(source, "fields", f"expected a {expected}, got dtype {fields.dtype}")
    if fields.ndim == 3:
        fields = fields[:, None]
    elif fields.ndim != 4:
        raise DataFileError(source, "fields", f"expected a {expected}, got shape {fields.shape}")
    n, t, ry, rx = fields.shape
    if ry != rx:
        raise DataFileError(source, "fields",
                            f"expected a square R x R grid, got {ry} x {rx} (shape {fields.shape})")
    if rx < 2 or t < 1:
        raise DataFileError(source, "fields",
                            f"expected at least 1 scale and R >= 2, got shape {fields.shape}")
    if n < 2:
        raise DataFileError(source, "fields",
                            f"expected N >= 2 samples (a split needs a test sample), got N = {n}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        fields = fields.astype(np.float32)
    finite = np.isfinite(fields)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise DataFileError(source, "fields",
                            f"expected finite values within float32 range, found "
                            f"{np.count_nonzero(~finite)} that are not (first at index {first})")
    return fields


def _check_resolution(arrays: Mapping[str, np.ndarray], source: str, resolution: int) -> None:
    if "resolution" not in arrays:
        raise DataFileError(source, "resolution", f"missing; expected the integer {resolution}")
    value = np.asarray(arrays["resolution"])
    integral = (value.size == 1 and _real_numeric(value)
                and np.isfinite(value).all() and float(value.reshape(())) == int(value.reshape(())))
    if not integral:
        raise DataFileError(source, "resolution",
                            f"expected one integer (R = {resolution}), got {_show(value)}")
    if int(value.reshape(())) != resolution:
        raise DataFileError(source, "resolution",
                            f"expected {resolution} to match fields' {resolution} x {resolution} "
                            f"grid, got {int(value.reshape(()))}")


def _times(arrays: Mapping[str, np.ndarray], source: str, n_scales: int) -> np.ndarray:
    expected = f"{n_scales} increasing finite numbers, one per scale"
    if "times" not in arrays:
        raise DataFileError(source, "times", f"missing; expected {expected}")
    times = np.asarray(arrays["times"])
    if not _real_numeric(times) or times.ndim > 1 or times.size != n_scales:
        raise DataFileError(source, "times", f"expected {expected}, got {_show(times)}")
    times = times.astype(np.float64).reshape(n_scales)
    if not np.isfinite(times).all() or np.any(np.diff(times) <= 0):
        raise DataFileError(source, "times", f"expected {expected}, got {_show(times)}")
    return times


def _sigmas(arrays: Mapping[str, np.ndarray], source: str, n_scales: int) -> np.ndarray | None:
    if "sigmas" not in arrays:
        return None
    expected = f"{n_scales} finite numbers >= 0 (filter widths, one per scale)"
    sigmas = np.asarray(arrays["sigmas"])
    if not _real_numeric(sigmas) or sigmas.ndim > 1 or sigmas.size != n_scales:
        raise DataFileError(source, "sigmas", f"expected {expected}, got {_show(sigmas)}")
    sigmas = sigmas.astype(np.float64).reshape(n_scales)
    if not np.isfinite(sigmas).all() or np.any(sigmas < 0):
        raise DataFileError(source, "sigmas", f"expected {expected}, got {_show(sigmas)}")
    return sigmas


def _held_out(arrays: Mapping[str, np.ndarray], source: str,
              n_scales: int) -> tuple[int, ...] | None:
    if "held_out_indices" not in arrays:
        return None
    key = "held_out_indices"
    allowed = f"distinct integer scale indices in 0..{n_scales - 1}, leaving a scale to train on"
    values = np.asarray(arrays[key])
    if values.size == 0:
        return ()
    if values.ndim > 1 or not _real_numeric(values):
        raise DataFileError(source, key, f"expected {allowed}, got {_show(values)}")
    values = values.reshape(-1)
    if not np.isfinite(values).all() or np.any(values != np.round(values)):
        raise DataFileError(source, key, f"expected integer scale indices, got {_show(values)}")
    indices = tuple(int(v) for v in values)
    if any(not 0 <= i < n_scales for i in indices):
        raise DataFileError(source, key, f"expected {allowed}, got {list(indices)} (out of range)")
    if len(set(indices)) != len(indices):
        raise DataFileError(source, key, f"expected {allowed}, got {list(indices)} (duplicates)")
    if len(indices) == n_scales:
        raise DataFileError(source, key,
                            f"expected {allowed}, got {list(indices)} (every scale held out)")
    return indices


def _show(value: np.ndarray) -> str:
    if value.ndim <= 1 and value.size <= 8 and value.dtype.kind in "biuf":
        shown = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v)
                          for v in value.reshape(-1).tolist())
        return shown if value.ndim == 0 else f"[{shown}]"
    return f"shape {value.shape}, dtype {value.dtype}"
