"""InsightFace verification sets: ``.bin`` pickles and the older bcolz ``carray`` folders.

A ``.bin`` is ``pickle((list_of_encoded_images, list_of_bool))`` with two images per pair
(``issame[i]`` belongs to images ``2i`` and ``2i+1``). In the wild the images are ``bytes``,
``bytearray``, Python 2 ``str`` (read as bytes, ``encoding='bytes'`` as insightface does) or numpy
uint8 arrays of any shape holding the encoded bytes (insightface's own test data: shape (N, 1));
the flags are bools or numpy bools; any pickle protocol 0-5.

Pickles can run code on load, so they are read with :class:`RestrictedUnpickler`, which refuses
every global except harmless builtins and numpy's array reconstruction, each behind a wrapper that
builds only a plain ``ndarray``, a ``dtype`` or a scalar of a dtype without Python objects: no
other numpy function, no subclass (``memmap``), no object arrays.
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import FormatError, UnsafePickleError
from ..io_utils import atomic_path, decode_image, image_kind

# Globals a legitimate .bin may reference: Python 3 pickles of bytes at protocol <= 2 go through
# _codecs.encode; bytearray/set/frozenset are plain containers. Nothing here can run code.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "bytearray"),
    ("__builtin__", "set"),
}


def _plain_dtype(dtype, where: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise UnsafePickleError(f"{where}: refusing a numpy array of Python objects ({dt}); a verification .bin "
                                "holds encoded image bytes")
    return dt


def _numpy_globals(where: str) -> dict:
    """numpy's pickle entry points (numpy 1 and 2 module paths), each wrapped to build only plain data."""

    def reconstruct(subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise UnsafePickleError(f"{where}: refusing to rebuild a {getattr(subtype, '__name__', subtype)} "
                                    "(only plain numpy arrays)")
        return np.ndarray.__new__(np.ndarray, shape, _plain_dtype(dtype, where))

    def dtype(*args):
        args = tuple(a.decode("latin1") if isinstance(a, bytes) else a for a in args)
        return _plain_dtype(np.dtype(*args), where)

    def scalar(dt, data=None):
        dt = _plain_dtype(dt, where)
        return np.frombuffer(bytes(data or b"\0" * dt.itemsize), dt)[0]

    def frombuffer(buf, dt, shape, order):
        return np.frombuffer(buf, _plain_dtype(dt, where)).reshape(shape, order=order).copy()

    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{core}.multiarray", "scalar")] = scalar
        out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return out


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, **kw):
        super().__init__(file, **kw)
        self._source = source
        self._numpy = _numpy_globals(source)

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if (module, name) in self._numpy:
            return self._numpy[(module, name)]
        raise UnsafePickleError(
            f"{self._source}: refusing to load global {module}.{name}: a verification .bin holds only "
            "bytes, numpy byte arrays, lists and bools; this file may be crafted to run code"
        )


def restricted_loads(data: bytes, source: str = "<bytes>"):
    try:
        return RestrictedUnpickler(io.BytesIO(data), source, encoding="bytes").load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise FormatError(f"{source}: not a readable pickle ({type(e).__name__}: {e}); truncated or corrupt?") from e


@dataclass
class PairSet:
    """Images (encoded bytes) and same/different flags of a verification set."""

    images: list[bytes]
    issame: list[bool]
    name: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.images) != 2 * len(self.issame):
            raise FormatError(
                f"{self.source or self.name}: {len(self.images)} images for {len(self.issame)} pairs; expected exactly 2 per pair"
            )

    @property
    def num_pairs(self) -> int:
        return len(self.issame)

    def decode(self, i: int) -> np.ndarray:
        return decode_image(self.images[i], f"{self.source or self.name} image {i} (pair {i // 2})")

    def info(self) -> dict:
        sizes: dict[str, int] = {}
        kinds: dict[str, int] = {}
        from ..io_utils import image_dimensions

        for b in self.images:
            kind = image_kind(b) or "unknown"
            kinds[kind] = kinds.get(kind, 0) + 1
            dims = image_dimensions(b) if b else None  # the header is enough (and never a bomb)
            key = "undecodable" if dims is None else f"{dims[0]}x{dims[1]}"
            sizes[key] = sizes.get(key, 0) + 1
        pos = int(sum(bool(x) for x in self.issame))
        return {
            "name": self.name,
            "path": self.source,
            "pairs": self.num_pairs,
            "images": len(self.images),
            "positives": pos,
            "negatives": self.num_pairs - pos,
            "image_sizes": sizes,
            "encodings": kinds,
        }


def _as_bytes(x, source: str, i: int) -> bytes:
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, np.ndarray) and x.dtype in (np.uint8, np.int8) and x.size:
        return np.ascontiguousarray(x).tobytes()  # any shape, e.g. insightface's (N, 1)
    if isinstance(x, np.ndarray) and x.dtype.kind == "S" and x.size == 1:  # a numpy bytes scalar array
        return bytes(x.reshape(-1)[0])
    raise FormatError(f"{source}: image {i} is a {type(x).__name__}"
                      f"{f' of {x.dtype} {x.shape}' if isinstance(x, np.ndarray) else ''}, expected encoded image bytes")


def read_bin(path: str | os.PathLike, name: str | None = None) -> PairSet:
    """Read an InsightFace ``.bin`` safely. Errors name the file and what is wrong."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FormatError(f"{p}: cannot read ({e.strerror})") from e
    if not data:
        raise FormatError(f"{p}: empty file")
    obj = restricted_loads(data, str(p))
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise FormatError(f"{p}: expected a pickled (images, issame) pair, got {type(obj).__name__}")
    bins, issame = obj
    if isinstance(issame, np.ndarray) and issame.ndim == 1:
        issame = issame.tolist()
    if isinstance(bins, np.ndarray) and bins.dtype.kind == "S":
        bins = list(bins)
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple)):
        raise FormatError(f"{p}: expected two lists (images, issame), got {type(bins).__name__}, {type(issame).__name__}")
    images = [_as_bytes(b, str(p), i) for i, b in enumerate(bins)]
    flags = []
    for i, s in enumerate(issame):
        if not isinstance(s, (bool, int, np.bool_, np.integer)):
            raise FormatError(f"{p}: issame[{i}] is a {type(s).__name__}, expected bool")
        flags.append(bool(s))
    return PairSet(images, flags, name=name or p.stem, source=str(p))


def write_bin(path: str | os.PathLike, images: Sequence[bytes], issame: Sequence[bool]) -> Path:
    """Write a ``.bin`` that insightface reads with ``pickle.load(f, encoding='bytes')``; atomic."""
    ps = PairSet([bytes(b) for b in images], [bool(s) for s in issame], source=str(path))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump((ps.images, ps.issame), f, protocol=4)
    return Path(path)


# -- bcolz carray sets (InsightFace_Pytorch style: <root>/<name>/ + <root>/<name>_list.npy) -------
# The carray holds float32 (N, 3, H, W) RGB images normalised to [-1, 1].

def _bcolz():
    try:
        import bcolz  # provided by bcolz-zipline
    except ImportError as e:  # pragma: no cover - depends on install
        raise ImportError("bcolz carray sets need the 'bcolz-zipline' package (pip install 'recface[bcolz]')") from e
    return bcolz


def read_carray(root: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 N x H x W x 3 RGB, issame bool array) of a bcolz verification set."""
    root = Path(root)
    arr_dir, list_file = root / name, root / f"{name}_list.npy"
    if not arr_dir.is_dir():
        raise FormatError(f"{arr_dir}: no bcolz carray folder")
    if not list_file.is_file():
        raise FormatError(f"{list_file}: missing issame list for carray set {name!r}")
    try:
        carr = _bcolz().carray(rootdir=str(arr_dir), mode="r")
        data = np.asarray(carr[:], dtype=np.float32)
    except Exception as e:  # bcolz raises many kinds
        raise FormatError(f"{arr_dir}: cannot read bcolz carray ({type(e).__name__}: {e})") from e
    issame = np.load(list_file, allow_pickle=False)
    if data.ndim != 4 or data.shape[1] != 3:
        raise FormatError(f"{arr_dir}: expected shape (N, 3, H, W), got {data.shape}")
    if len(data) != 2 * len(issame):
        raise FormatError(f"{arr_dir}: {len(data)} images for {len(issame)} pairs in {list_file.name}")
    imgs = np.clip(np.rint(data.transpose(0, 2, 3, 1) * 127.5 + 127.5), 0, 255).astype(np.uint8)
    return imgs, issame.astype(bool)


def write_carray(root: str | os.PathLike, name: str, images: np.ndarray, issame: Sequence[bool]) -> Path:
    """Write uint8 N x H x W x 3 RGB images as a bcolz carray set (atomic: temp folder + rename)."""
    import shutil

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != 2 * len(issame):
        raise ValueError(f"write_carray: want N x H x W x 3 images, 2 per pair; got {images.shape} for {len(issame)} pairs")
    data = (images.astype(np.float32).transpose(0, 3, 1, 2) - 127.5) / 127.5
    tmp = root / f".{name}.tmp-write"
    if tmp.exists():
        shutil.rmtree(tmp)
    carr = _bcolz().carray(data, rootdir=str(tmp), mode="w")
    carr.flush()
    with atomic_path(root / f"{name}_list.npy", suffix=".npy") as t:
        np.save(t, np.asarray(issame, dtype=bool))
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
