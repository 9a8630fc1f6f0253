"""IJB-B / IJB-C template-based evaluation on insightface's release layout (``IJBC/loose_crop/``,
``IJBC/meta/``), the benchmark modern papers lead with.

* Images are aligned with the release's five landmarks (``meta/ijbc_name_5pts_score.txt``: name,
  10 coordinates, detector score), never re-detected, when the model's contract aligns by landmarks
  (other embedders, e.g. ``dlib_resnet``, use their own chain on the loose crop).
* Image feature: the flip-summed embedding (``flip_sum``: L2-normalised, insightface's N0 mode),
  optionally multiplied by the detector score (insightface's D1). Template feature as insightface's
  ``image2template_feature``: images of one media are averaged, media features summed, the sum
  L2-normalised.
* 1:1 verification (``meta/ijbc_template_pair_label.txt``): cosine of template pairs, scored in
  batches (memory flat in the number of pairs beyond the score vector); TAR at FAR 1e-6 .. 1e-1 as
  insightface's table: sklearn's ROC, the point whose FPR is nearest the target, ties to the largest
  TPR.
* 1:N identification (``ijbc_1N_gallery_G1/G2.csv``, ``ijbc_1N_probe_mixed.csv``; IJB-B: S1/S2):
  gallery G1 + G2 (one template per subject), rank-1/5/10 accuracy of the mixed probes, and
  insightface's ``evaluation()``: at FPIR f the threshold is the ceil(f x probes)-th largest non-mated
  similarity of all probe x gallery pairs; TPIR is the share of probes whose mated similarity
  exceeds it."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError

FARS_11 = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FPIRS_1N = (0.01, 0.1)
RANKS = (1, 5, 10)


@dataclass
class IJBMeta:
    name: str                   # ijbb / ijbc
    root: Path
    images: list[str]           # loose_crop file names, in the 5pts file's order
    landmarks: np.ndarray       # (N, 5, 2)
    scores: np.ndarray          # (N,) detector (faceness) scores
    templates: np.ndarray       # (N,) template id per image
    medias: np.ndarray          # (N,) media id per image
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # t1, t2, label
    gallery: tuple[np.ndarray, np.ndarray] | None            # templates, subject ids (G1 + G2)
    probes: tuple[np.ndarray, np.ndarray] | None


def _table(path: Path, cols: int, where: str, delimiter=None, skip: int = 0) -> list[list[str]]:
    try:
        lines = path.read_text().splitlines()[skip:]
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror})") from e
    rows = []
    for n, line in enumerate(lines, skip + 1):
        if not line.strip():
            continue
        parts = line.strip().split(delimiter)
        if len(parts) < cols:
            raise FormatError(f"{path}: line {n}: expected {cols} fields ({where}), got {line[:80]!r}")
        rows.append(parts)
    return rows


def read_ijb(root: str | os.PathLike) -> IJBMeta:
    """insightface's IJB release folder (``.../IJBC`` or ``.../IJBB``)."""
    root = Path(root)
    name = root.name.lower()
    meta = root / "meta"
    if name not in ("ijbb", "ijbc") or not meta.is_dir():
        raise FormatError(f"{root}: expected insightface's IJBB/ or IJBC/ folder (loose_crop/, meta/)")
    rows = _table(meta / f"{name}_name_5pts_score.txt", 12, "name, 10 landmark coordinates, score")
    images = [r[0] for r in rows]
    lmk = np.array([[float(v) for v in r[1:11]] for r in rows], np.float32).reshape(-1, 5, 2)
    scores = np.array([float(r[-1]) for r in rows], np.float32)
    tm = _table(meta / f"{name}_face_tid_mid.txt", 3, "image name, template id, media id")
    if len(tm) != len(images) or any(a[0] != b for a, b in zip(tm, images)):
        raise FormatError(f"{meta / f'{name}_face_tid_mid.txt'}: must list the same images in the same order as "
                          f"{name}_name_5pts_score.txt ({len(tm)} vs {len(images)} lines)")
    templates = np.array([int(r[1]) for r in tm], np.int64)
    medias = np.array([int(r[2]) for r in tm], np.int64)
    pairs = None
    pf = meta / f"{name}_template_pair_label.txt"
    if pf.is_file():
        pr = _table(pf, 3, "template 1, template 2, label")
        pairs = tuple(np.array([int(r[k]) for r in pr], np.int64) for k in range(3))
    g = ("G1", "G2") if name == "ijbc" else ("S1", "S2")
    gfiles = [meta / f"{name}_1N_gallery_{s}.csv" for s in g]
    probe_file = meta / f"{name}_1N_probe_mixed.csv"
    gallery = probes = None
    if all(f.is_file() for f in gfiles) and probe_file.is_file():
        gr = [r for f in gfiles for r in _table(f, 2, "TEMPLATE_ID,SUBJECT_ID,...", ",", skip=1)]
        gallery = (np.array([int(r[0]) for r in gr], np.int64), np.array([int(r[1]) for r in gr], np.int64))
        prr = _table(probe_file, 2, "TEMPLATE_ID,SUBJECT_ID,...", ",", skip=1)
        probes = (np.array([int(r[0]) for r in prr], np.int64), np.array([int(r[1]) for r in prr], np.int64))
    return IJBMeta(name, root, images, lmk, scores, templates, medias, pairs, gallery, probes)


# -- features ------------------------------------------------------------------------------------
def image_features(e: np.ndarray, e_flip: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    from ..protocol.verification import flip_sum

    f = flip_sum(e, e_flip)
    return f * scores[:, None] if scores is not None else f


def template_features(img_feats: np.ndarray, templates: np.ndarray, medias: np.ndarray,
                      choose: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised template features, their template ids sorted): per template, the images of one
    media averaged, the media features summed, the sum normalised. Vectorised: one sort, segment sums."""
    uniq = np.unique(templates if choose is None else choose)
    keep = np.isin(templates, uniq)
    t, m, f = templates[keep], medias[keep], np.asarray(img_feats, np.float64)[keep]
    # per (template, media): mean of its images
    tm, inv = np.unique(np.stack([t, m], 1), axis=0, return_inverse=True)
    inv = inv.ravel()
    sums = np.zeros((len(tm), f.shape[1]))
    np.add.at(sums, inv, f)
    media_feats = sums / np.bincount(inv, minlength=len(tm))[:, None]
    # per template: sum of its media features
    tid = np.searchsorted(uniq, tm[:, 0])
    out = np.zeros((len(uniq), f.shape[1]))
    np.add.at(out, tid, media_feats)
    missing = np.setdiff1d(uniq, t)
    if len(missing):
        raise FormatError(f"templates without images: {missing[:10].tolist()}")
    return out / np.sqrt((out ** 2).sum(-1, keepdims=True)), uniq


def pair_scores(feats: np.ndarray, ids: np.ndarray, t1: np.ndarray, t2: np.ndarray,
                batch: int = 20_000) -> np.ndarray:
    """Cosine of template pairs, ``batch`` pairs at a time: memory beyond the score vector stays
    at two batch x dim float64 blocks whatever the number of pairs."""
    pos1, pos2 = np.searchsorted(ids, t1), np.searchsorted(ids, t2)
    bad = (pos1 >= len(ids)) | (pos2 >= len(ids))
    bad |= (ids[np.minimum(pos1, len(ids) - 1)] != t1) | (ids[np.minimum(pos2, len(ids) - 1)] != t2)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(f"template pair {i} ({t1[i]}, {t2[i]}) names a template with no images")
    f = np.asarray(feats, np.float64)
    out = np.empty(len(t1), np.float64)
    for s in range(0, len(t1), batch):
        out[s:s + batch] = np.einsum("ij,ij->i", f[pos1[s:s + batch]], f[pos2[s:s + batch]])
    return out


# -- metrics -------------------------------------------------------------------------------------
def tar_at_far(labels: np.ndarray, scores: np.ndarray, fars=FARS_11) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """insightface's IJB table: sklearn ROC; for each FAR the point whose FPR is nearest, ties to
    the largest TPR. Returns ({far: tar}, (fpr, tpr))."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    out = {}
    for x in fars:
        d = np.abs(fpr - x)
        out[f"{x:.0e}"] = float(tpr[np.flatnonzero(d == d.min())[-1]])
    return out, (fpr, tpr)


def identification(probe_feats: np.ndarray, probe_ids: np.ndarray, gallery_feats: np.ndarray,
                   gallery_ids: np.ndarray, fpirs=FPIRS_1N, ranks=RANKS, chunk: int = 4096) -> dict:
    """Rank-k accuracy and TPIR at FPIR as insightface's ijb_1n ``evaluation`` (see the module doc);
    every probe subject must have exactly one gallery template. Probes in chunks."""
    where = {s: i for i, s in enumerate(gallery_ids.tolist())}
    if len(where) != len(gallery_ids):
        raise FormatError("1:N gallery: a subject has several gallery templates (G1 and G2 must not overlap)")
    missing = [int(s) for s in probe_ids if int(s) not in where]
    if missing:
        raise FormatError(f"1:N probes: subjects {missing[:10]} have no gallery template")
    mask = np.array([where[int(s)] for s in probe_ids])
    q, g = len(probe_ids), len(gallery_ids)
    need = max(math.ceil(q * f) for f in fpirs)
    hits = {k: 0 for k in ranks}
    pos = np.empty(q)
    top_neg = np.empty(0)
    for s in range(0, q, chunk):
        sim = np.asarray(probe_feats[s:s + chunk], np.float64) @ np.asarray(gallery_feats, np.float64).T
        m = mask[s:s + chunk]
        rows = np.arange(len(m))
        p = sim[rows, m]
        pos[s:s + chunk] = p
        # rank of the mated template: ties broken as a stable descending argsort would (earlier first)
        better = (sim > p[:, None]).sum(1) + ((sim == p[:, None]) & (np.arange(g)[None, :] < m[:, None])).sum(1)
        for k in ranks:
            hits[k] += int((better < k).sum())
        sim[rows, m] = -np.inf
        neg = sim[np.isfinite(sim)]
        top_neg = np.sort(np.concatenate([top_neg, neg[np.argpartition(-neg, min(need, len(neg)) - 1)[:need]]
                                          if len(neg) > need else neg]))[::-1][:need]
    out = {f"rank{k}": hits[k] / q for k in ranks}
    for f in fpirs:
        th = top_neg[math.ceil(q * f) - 1]
        out[f"tpir_fpir_{f:.0e}"] = float((pos > th).sum() / q)
        out[f"threshold_fpir_{f:.0e}"] = float(th)
    out.update(probes=q, gallery=g)
    return out


# -- running it ----------------------------------------------------------------------------------
def embed_ijb(meta: IJBMeta, model: str, workers: int = 1, backend: str = "keras",
              show_progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    from ..embedders import embed_parallel

    crop = meta.root / "loose_crop"
    items = [(str(crop / n), lm.tolist()) for n, lm in zip(meta.images, meta.landmarks)]
    return embed_parallel(model, items, workers, backend, desc=f"embed {meta.name}", show_progress=show_progress)


def evaluate_ijb(meta: IJBMeta, e: np.ndarray, ef: np.ndarray, detector_score: bool = True,
                 batch: int = 20_000) -> dict:
    """Both protocols on image embeddings ``e`` and mirrored ``ef`` (in the 5pts file's order)."""
    feats = image_features(e, ef, meta.scores if detector_score else None)
    res: dict = {"images": len(meta.images), "templates": int(len(np.unique(meta.templates))),
                 "detector_score": detector_score}
    if meta.pairs is not None:
        tf, ids = template_features(feats, meta.templates, meta.medias)
        t1, t2, label = meta.pairs
        sc = pair_scores(tf, ids, t1, t2, batch)
        tars, (fpr, tpr) = tar_at_far(label, sc)
        res.update(pairs=int(len(label)), tar_far=tars, _roc=(fpr, tpr))
    if meta.gallery is not None:
        gt, gs = meta.gallery
        pt, ps = meta.probes
        gfeat, gids = template_features(feats, meta.templates, meta.medias, gt)
        pfeat, pids = template_features(feats, meta.templates, meta.medias, pt)
        subj_g = dict(zip(gt.tolist(), gs.tolist()))
        subj_p = dict(zip(pt.tolist(), ps.tolist()))
        res["identification"] = identification(pfeat, np.array([subj_p[t] for t in pids]), gfeat,
                                               np.array([subj_g[t] for t in gids]))
    return res
