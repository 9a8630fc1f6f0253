"""Small I/O helpers shared by every stage: atomic writes, image decoding, JSON manifests."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import ImageDecodeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    A crash leaves at most a ``.<name>.tmp-*`` file (removed by the next run, ``manifest.clean_stale``),
    never a half-written ``final``. The file gets the mode
    a plain ``open()`` would give it (0666 less the umask), not mkstemp's 0600."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=suffix or "", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's whole content, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def user_cache_dir() -> Path:
    """recface's cache folder: ``$RECFACE_CACHE``, else ``$XDG_CACHE_HOME/recface`` (``~/.cache/recface``).
    Converted model files live under ``zoo/``, data fetched by ``recface data`` under ``data/``."""
    env = os.environ.get("RECFACE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recface"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_json(final: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(final, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def image_kind(data: bytes) -> str | None:
    """'jpg', 'png', 'pnm', 'bmp' or None, from the magic bytes."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] in (b"P5", b"P6", b"P2", b"P3"):
        return "pnm"
    if data[:2] == b"BM":
        return "bmp"
    return None


def image_complete(data: bytes, kind: str | None = None) -> bool:
    """False for a JPEG without its end-of-image marker or a PNG without its IEND chunk (a payload
    cut short); a cheap check that needs no decoding."""
    kind = kind or image_kind(data)
    if kind == "jpg":
        return b"\xff\xd9" in data[-64:]
    if kind == "png":
        return b"IEND" in data[-16:]
    return True


def max_pixels() -> int:
    """The largest image recface decodes: ``RECFACE_MAX_MEGAPIXELS`` (default 50) million pixels.
    A face photo is far smaller; a 20000 x 20000 PNG of 1 MB would need 1.2 GB decoded."""
    try:
        return int(float(os.environ.get("RECFACE_MAX_MEGAPIXELS", "50")) * 1e6)
    except ValueError:
        raise ImageDecodeError(f"RECFACE_MAX_MEGAPIXELS: not a number: {os.environ['RECFACE_MAX_MEGAPIXELS']!r}") from None


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header alone (no decoding); None when the header is unreadable."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.MAX_IMAGE_PIXELS = None  # our own limit applies, below
            with Image.open(io.BytesIO(data)) as im:
                return int(im.size[0]), int(im.size[1])
    except Exception:  # PIL raises many types for a broken header; the decoder names the file later
        return None


def check_pixels(data: bytes, source: str) -> None:
    """Refuse, before decoding, an image whose header declares more pixels than :func:`max_pixels`."""
    dims = image_dimensions(data)
    if dims and dims[0] * dims[1] > max_pixels():
        raise ImageDecodeError(f"{source}: image of {dims[0]} x {dims[1]} pixels ({dims[0] * dims[1] / 1e6:.0f} MP) "
                               f"exceeds the limit of {max_pixels() / 1e6:g} MP (a decompression bomb?); "
                               "raise RECFACE_MAX_MEGAPIXELS to read it")


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 HxWx3 (grayscale is replicated to 3 channels);
    images above the pixel limit are refused from their header, before any pixel is decoded."""
    import cv2

    if not data:
        raise ImageDecodeError(f"{source}: empty image (0 bytes)")
    check_pixels(data, source)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None or arr.size == 0:
        raise ImageDecodeError(f"{source}: cannot decode image ({len(data)} bytes, not a valid image)")
    return np.ascontiguousarray(arr[:, :, ::-1])


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 HxWx3; a clear error naming the file if it cannot be."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageDecodeError(f"{p}: cannot read ({e.strerror})") from e
    return decode_image(data, str(p))


def encode_image(rgb: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    """Encode an RGB (or grayscale) uint8 image; the inverse of :func:`decode_image`."""
    import cv2

    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_image wants uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise ValueError(f"cannot encode image as {ext}")
    return buf.tobytes()


def load_item(item, source: str = "<bytes>") -> np.ndarray:
    """An image given as a path, encoded bytes (named ``source`` in errors), or an already decoded
    array -> RGB uint8."""
    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, (bytes, bytearray)):
        return decode_image(bytes(item), source)
    return read_image(item)
