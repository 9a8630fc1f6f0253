"""Pair sets and the one pair-scoring function used by ``verify``/``evaluate`` and by the
trainer's validation: load a set (``.bin``, bcolz carray folder, or ``pairs.txt`` + images),
embed each distinct image once (with its mirror), score with the 10-fold protocol."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError
from .verification import VerificationResult, evaluate_embeddings, flip_concat, flip_sum, fold_indices

# items -> (embeddings, embeddings of the mirrored images, {how the faces were found: count})
EmbedItems = Callable[[list], tuple[np.ndarray, np.ndarray, dict]]


@dataclass
class PairSource:
    """Distinct image items (paths, encoded bytes or arrays) and, per pair, the indices of its two images."""

    name: str
    items: list
    index1: np.ndarray
    index2: np.ndarray
    issame: np.ndarray
    stored: np.ndarray | None = None  # .bin/bcolz: each item's image number in the file (for messages)


def distinct_items(items) -> tuple[list, np.ndarray, np.ndarray]:
    """The distinct images among ``items`` (encoded bytes or arrays, equal when their content is)
    in first-seen order, for each item the index of its copy, and for each distinct image the
    position of its first copy in ``items`` (what an error message names): a .bin stores an image once per
    pair it is in (LFW's 12,000 images are 7,701 distinct, fold 10's 1,200 are 785), and an image
    embeds the same every time, so each is aligned and embedded once."""
    import hashlib

    seen: dict = {}
    out, first, index = [], [], np.empty(len(items), np.int64)
    for i, it in enumerate(items):
        if isinstance(it, np.ndarray):
            key = (it.shape, it.dtype.str, hashlib.sha1(np.ascontiguousarray(it).tobytes()).digest())
        elif isinstance(it, (bytes, bytearray, memoryview)):
            key = hashlib.sha1(it).digest()
        else:  # a path: the file it names
            key = str(it)
        j = seen.setdefault(key, len(out))
        if j == len(out):
            out.append(it)
            first.append(i)
        index[i] = j
    return out, index, np.asarray(first, np.int64)


def consecutive_pairs(name: str, images, issame, wanted: set | None) -> PairSource:
    """Sets stored as image 2i, 2i+1 = pair i (.bin, bcolz); ``wanted``: 1-based fold numbers.
    Each distinct image is one item (``distinct_items``)."""
    n = len(issame)
    keep = np.arange(n) if wanted is None else np.concatenate(
        [idx for f, idx in enumerate(fold_indices(n, 10), start=1) if f in wanted])
    stored = np.array([j for i in keep for j in (2 * i, 2 * i + 1)], np.int64)
    items, index, first = distinct_items([images[j] for j in stored])
    return PairSource(name, items, index[0::2], index[1::2], np.asarray(issame, bool)[keep], stored[first])


def expand_pair_sets(paths: list) -> list[str]:
    """A folder holding several pair sets (insightface's ``faces_emore/``: lfw.bin, cfp_fp.bin,
    agedb_30.bin, ... or bcolz ``NAME/`` + ``NAME_list.npy``) stands for all of them, sorted by name;
    a folder with a pairs.txt, a bcolz set folder and a file stand for themselves."""
    out = []
    for x in paths:
        p = Path(x)
        if p.is_dir() and not (p / "pairs.txt").is_file() and not (p.parent / f"{p.name}_list.npy").is_file():
            found = sorted([q for q in p.glob("*.bin")] +
                           [q for q in p.iterdir() if q.is_dir() and (p / f"{q.name}_list.npy").is_file()],
                           key=lambda q: q.stem)
            if not found:
                raise ConfigError(f"{p}: no pair sets in this folder (.bin files, bcolz NAME/ + NAME_list.npy, "
                                  "or a pairs.txt)")
            out += [str(q) for q in found]
        else:
            out.append(str(x))
    return out


def load_pair_source(pairs: str | os.PathLike, images: str | os.PathLike | None = None,
                     folds: list[int] | None = None) -> PairSource:
    """``pairs`` is a ``.bin``, a bcolz carray folder (with ``<name>_list.npy`` beside it), or a
    ``pairs.txt`` whose images lie under ``images`` (or under ``lfw-deepfunneled/``, ``lfw/`` or
    ``images/`` beside it). ``folds`` (1-based, as LFW numbers them) keeps those folds only."""
    from ..data.lfw_pairs import fold_set, read_pairs
    from ..data.verification_bin import read_bin

    p = Path(pairs)
    wanted = fold_set(folds)
    if p.is_dir() and (p.parent / f"{p.name}_list.npy").is_file():  # bcolz carray set (insightface)
        from ..data.verification_bin import read_carray
        imgs, issame = read_carray(p.parent, p.name)
        return consecutive_pairs(p.name, imgs, issame, wanted)
    if p.is_dir():
        p = p / "pairs.txt"
    if p.suffix == ".bin":
        ps = read_bin(p)
        return consecutive_pairs(p.stem, ps.images, ps.issame, wanted)
    if images is None or images == "":
        for cand in ("lfw-deepfunneled", "lfw", "images"):
            if (p.parent / cand).is_dir():
                images = p.parent / cand
                break
        else:
            raise ConfigError(f"{p}: give the image folder of this pairs file (images)")
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


def score_embeddings(src: PairSource, e: np.ndarray, e_flip: np.ndarray | None = None, flip: bool = False,
                     metric: str = "cosine", **protocol) -> VerificationResult:
    """The protocol on embeddings of ``src.items``; with ``flip`` the mirrored images' embeddings
    join them as the protocol does it: summed (insightface) or concatenated (``protocol="facenet"``).
    ``protocol``: ``evaluate_embeddings``' protocol, distance and subtract_mean."""
    if flip:
        emb = flip_concat(e, e_flip) if protocol.get("protocol") == "facenet" else flip_sum(e, e_flip)
    else:
        emb = e
    return evaluate_embeddings(emb[src.index1], emb[src.index2], src.issame, n_folds=min(10, len(src.issame)),
                               metric=metric, **protocol)


def score_pair_set(src: PairSource, embed_items: EmbedItems, flips=(False,), metric: str = "cosine", **protocol):
    """Embed every distinct image of ``src`` once (and its mirror) and score it: ({flip: result}, stats)."""
    e, ef, stats = embed_items(src.items)
    return {fl: score_embeddings(src, e, ef, fl, metric, **protocol) for fl in flips}, stats
