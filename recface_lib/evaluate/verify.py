"""``recface verify``: score a pair set (``.bin``, or an image folder + ``pairs.txt``) with an
embedder, using the 10-fold protocol of :mod:`.verification`, and save ROC / histogram plots."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..parallel import chunked, parallel_map
from ..progress import progress
from .verification import VerificationResult, evaluate_embeddings, fold_indices, l2_normalize

EMBEDDERS = ("dlib_resnet",)


@dataclass
class PairSource:
    """Distinct image items (paths or encoded bytes) and, per pair, the indices of its two images."""

    name: str
    items: list
    index1: np.ndarray
    index2: np.ndarray
    issame: np.ndarray


def _consecutive_pairs(name: str, images, issame, wanted: set | None) -> PairSource:
    """Sets stored as image 2i, 2i+1 = pair i (.bin, bcolz), optionally only some folds."""
    n = len(issame)
    keep = np.arange(n) if wanted is None else np.concatenate(
        [idx for f, idx in enumerate(fold_indices(n, 10)) if f in wanted])
    items = [images[j] for i in keep for j in (2 * i, 2 * i + 1)]
    k = np.arange(len(keep))
    return PairSource(name, items, 2 * k, 2 * k + 1, np.asarray(issame, bool)[keep])


def load_pair_source(pairs: str | os.PathLike, images: str | os.PathLike | None = None,
                     folds: list[int] | None = None) -> PairSource:
    """``pairs`` is a ``.bin``, a bcolz carray folder (with ``<name>_list.npy`` beside it), or a ``pairs.txt`` whose images lie under ``images`` (or under
    ``lfw-deepfunneled/`` / ``lfw/`` beside it). ``folds`` (0-based) keeps those folds only."""
    from ..data.lfw_pairs import read_pairs
    from ..data.verification_bin import read_bin

    p = Path(pairs)
    wanted = None if folds is None else set(folds)
    if p.is_dir() and (p.parent / f"{p.name}_list.npy").is_file():  # bcolz carray set (insightface)
        from ..data.verification_bin import read_carray
        imgs, issame = read_carray(p.parent, p.name)
        return _consecutive_pairs(p.name, imgs, issame, wanted)
    if p.is_dir():
        p = p / "pairs.txt"
    if p.suffix == ".bin":
        ps = read_bin(p)
        return _consecutive_pairs(p.stem, ps.images, ps.issame, wanted)
    if images is None:
        for cand in ("lfw-deepfunneled", "lfw", "images"):
            if (p.parent / cand).is_dir():
                images = p.parent / cand
                break
        else:
            raise ConfigError(f"{p}: give the image folder of this pairs file (--images DIR)")
    plist = read_pairs(p, images)
    if wanted is not None:
        plist = [q for q in plist if q.fold in wanted]
    uniq: dict[Path, int] = {}
    for q in plist:
        for path in (q.path1, q.path2):
            uniq.setdefault(path, len(uniq))
    return PairSource(p.parent.name or p.stem, [str(x) for x in uniq],
                      np.array([uniq[q.path1] for q in plist]), np.array([uniq[q.path2] for q in plist]),
                      np.array([q.same for q in plist], bool))


def embedder_factory(spec: str, backend: str = "keras"):
    """(factory, kwargs) for parallel_map: ``dlib_resnet``, a training run folder, or a bundle .zip
    (``backend`` onnx or keras)."""
    if spec == "dlib_resnet":
        from .reference import DlibResNetEmbedder
        return DlibResNetEmbedder, {}
    if Path(spec).exists():
        from ..inference import make_recognizer
        return make_recognizer, {"spec": str(spec), "backend": backend}
    raise ConfigError(f"embedder: {spec!r} is not {', '.join(EMBEDDERS)}, a training run folder or a bundle .zip "
                      "(no such path)")


def embed_items(items: list, embedder: str = "dlib_resnet", workers: int = 1, chunk: int = 32, desc: str = "embed",
                show_progress: bool = True, backend: str = "keras") -> tuple[np.ndarray, np.ndarray, dict]:
    """Embed images (paths or encoded bytes): (embeddings, mirrored-image embeddings, detection stats)."""
    factory, kwargs = embedder_factory(embedder, backend)
    bar = progress(total=len(items), desc=f"{desc} ({Path(embedder).name})", unit="img", disable=not show_progress)
    es, efs, stats = [], [], {}
    for e, ef, st in parallel_map(factory, kwargs, "embed_items", chunked(items, chunk), workers,
                                  on_result=lambda r: bar.update(len(r[0]))):
        es.append(e)
        efs.append(ef)
        for k, v in st.items():
            stats[k] = stats.get(k, 0) + v
    bar.close()
    return np.concatenate(es), np.concatenate(efs), stats


def embed_source(src: PairSource, embedder: str = "dlib_resnet", workers: int = 1, chunk: int = 32,
                 show_progress: bool = True, backend: str = "keras") -> tuple[np.ndarray, np.ndarray, dict]:
    """Embed every distinct image of a pair set once."""
    return embed_items(src.items, embedder, workers, chunk, f"embed {src.name}", show_progress, backend)


def verify(pairs: str | os.PathLike, embedder: str = "dlib_resnet", images=None, flip: bool = False,
           metric: str = "cosine", folds: list[int] | None = None, workers: int = 1, plots: str | None = None,
           show_progress: bool = True) -> tuple[VerificationResult, dict]:
    src = load_pair_source(pairs, images, folds)
    e, ef, stats = embed_source(src, embedder, workers, show_progress=show_progress)
    emb = l2_normalize(e) + l2_normalize(ef) if flip else e
    n_folds = 10 if len(src.issame) >= 10 else len(src.issame)
    res = evaluate_embeddings(emb[src.index1], emb[src.index2], src.issame, n_folds=n_folds, metric=metric)
    info = {"pairs": str(pairs), "embedder": embedder, "flip": flip, "detections": stats,
            "distinct_images": len(src.items)}
    if plots:
        from .plots import plot_roc, plot_similarity_hist

        out = Path(plots)
        label = f"{embedder}{' +flip' if flip else ''}"
        plot_roc({label: res}, out / f"roc_{src.name}.png", title=f"ROC: {src.name}")
        cos = (l2_normalize(emb[src.index1]) * l2_normalize(emb[src.index2])).sum(1)
        thr = res.threshold if metric == "cosine" else None
        plot_similarity_hist(cos, src.issame, thr, out / f"hist_{src.name}.png", title=f"{src.name}: {label}")
        info["plots"] = [str(out / f"roc_{src.name}.png"), str(out / f"hist_{src.name}.png")]
    return res, info
