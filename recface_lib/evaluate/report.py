"""``recface evaluate --params eval.yaml`` (and ``recface verify``, the same stage): several models (``dlib_resnet``, training runs, export
bundles) on several pair sets (``.bin``, folder + pairs.txt, bcolz carray sets), with and/or
without flip TTA; one comparison table (Markdown, CSV, JSON) and, per pair set, the ROC curves of
all models on one figure. Each set's images are embedded once per model (flip embeddings come
from the same pass)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import StageConfig, choice, param
from ..errors import ConfigError
from ..io_utils import atomic_path, atomic_write_bytes, atomic_write_json
from ..manifest import check_not_input, write_manifest
from ..protocol.verification import DISTANCES, PROTOCOLS


@dataclass
class EvalConfig(StageConfig):
    models: list = param(["dlib_resnet"], "embedders: references (dlib_resnet, sface), training run folders, bundle .zip files", role="input")
    pair_sets: list = param([], "pair sets: .bin files, pairs.txt files or folders holding one, bcolz carray folders, "
                                "or a folder of sets (e.g. faces_emore/: every .bin and bcolz set in it)", role="input")
    images: str = param("", "image folder of pairs.txt sets ('' : lfw-deepfunneled/, lfw/ or images/ beside it)", role="input")
    flip: str = choice("both", ("no", "yes", "both"), "flip test-time augmentation")
    folds: list | None = param(None, "evaluate only these folds (1-based, LFW's 1..10) of each set; None: all")
    metric: str = choice("cosine", ("cosine", "euclidean"), "threshold reported as cosine or insightface's squared L2")
    protocol: str = choice("insightface", PROTOCOLS, "insightface's protocol, or facenet's (distance, subtract_mean; "
                           "flip concatenates the two embeddings; adds EER, precision and recall)")
    distance: str = choice("euclidean", DISTANCES, "facenet protocol: squared L2 or cosine (arccos(similarity) / pi)")
    subtract_mean: bool = param(False, "facenet protocol: subtract the mean embedding of the training folds, per fold")
    output: str = param("", role="output", help="report folder (results.md/.csv/.json, roc_<set>.png, hist_<set>_<model>.png)")
    ijb: list = param([], "IJB-B/IJB-C release folders (insightface layout: IJBC/loose_crop, IJBC/meta): 1:1 and 1:N", role="input")
    ijb_detector_score: bool = param(True, "IJB: weight image features by the release's detector score")
    workers: int = param(0, "worker processes for embedding (0: the usable cores; one below 256 images)", lo=0, hi=256, runtime=True)
    backend: str = choice("keras", ("keras", "onnx"), "how bundles run")

    def protocol_params(self) -> dict:
        """What ``protocol.verification.evaluate_embeddings`` takes beyond the pairs (facenet's)."""
        if self.protocol != "facenet":
            return {}
        return {"protocol": "facenet", "distance": self.distance, "subtract_mean": self.subtract_mean}

    def validate(self, where=""):
        from ..data.lfw_pairs import fold_set

        fold_set(self.folds, f"{where}folds")
        if self.protocol != "facenet" and (self.subtract_mean or self.distance != "euclidean"):
            raise ConfigError(f"{where}distance / subtract_mean: facenet protocol settings; give protocol: facenet")
        if not self.models or not (self.pair_sets or self.ijb):
            raise ConfigError(f"{where}models and pair_sets (or ijb): give at least one of each")
        if not self.output:
            raise ConfigError(f"{where}output: required")


ROC_FILE = "roc_curves.npz"  # set|model label|fpr, ...|tpr arrays of every ROC drawn
COLUMNS = ["model", "pair_set", "flip", "pairs", "accuracy", "std", "threshold", "tar_far_1e-3", "tar_far_1e-4", "auc",
           "angle_same", "angle_diff"]


def evaluate(cfg: EvalConfig | dict, show_progress: bool = True) -> dict:
    from ..embedders import embed_parallel
    from ..plots import plot_roc, plot_similarity_hist
    from ..protocol.pair_sets import expand_pair_sets, load_pair_source, score_pair_set

    if isinstance(cfg, dict):
        cfg = EvalConfig.from_dict(cfg)
    check_not_input(cfg.output, cfg.input_paths(), "evaluate")
    out = Path(cfg.output)
    flips = {"no": [False], "yes": [True], "both": [False, True]}[cfg.flip]
    rows, curves, plots = [], {}, []
    for ps in expand_pair_sets(cfg.pair_sets):
        src = load_pair_source(ps, cfg.images or None, cfg.folds)
        for m in cfg.models:
            name = Path(m).name

            def embed(items, m=m):
                return embed_parallel(m, items, cfg.workers, cfg.backend, desc=f"embed {src.name}",
                                      show_progress=show_progress)

            results, stats = score_pair_set(src, embed, flips, cfg.metric, **cfg.protocol_params())
            for fl, r in results.items():
                label = f"{name}{' +flip' if fl else ''}"
                curves.setdefault(src.name, {})[label] = r
                rows.append({"model": name, "pair_set": src.name, "flip": fl,
                             "pairs": r.num_pairs, "accuracy": r.accuracy, "std": r.accuracy_std,
                             "threshold": r.threshold, "tar_far_1e-3": r.val_far.get("1e-03", {}).get("tar"),
                             "tar_far_1e-4": r.val_far.get("1e-04", {}).get("tar"), "auc": r.auc,
                             "angle_same": r.mean_angle_same, "angle_diff": r.mean_angle_diff,
                             "fold_scheme": r.fold_scheme, "distinct_images": len(src.items),
                             **({"protocol": "facenet", "distance": r.metric, "subtract_mean": r.subtract_mean,
                                 "far_1e-3": r.val_far.get("1e-03", {}).get("far"), "eer": r.eer,
                                 "precision": r.precision, "recall": r.recall} if r.protocol == "facenet" else {}),
                             "detections": stats, "model_path": str(m)})
            best_flip = flips[-1]
            r = results[best_flip]
            hist = out / f"hist_{src.name}_{name}.png"
            plot_similarity_hist(np.asarray(r.similarities), src.issame,
                                 r.threshold if cfg.metric == "cosine" and cfg.protocol != "facenet" else None, hist,
                                 title=f"{src.name}: {name}{' +flip' if best_flip else ''}")
            plots.append(str(hist))
    roc_arrays = {}
    for name, res in curves.items():
        plot_roc(res, out / f"roc_{name}.png", title=f"ROC: {name}")
        plots.append(str(out / f"roc_{name}.png"))
        for label, r in res.items():  # kept for `recface compare` (ROC of several runs on one figure)
            roc_arrays[f"{name}|{label}|fpr"] = np.asarray(r.roc_fpr, np.float32)
            roc_arrays[f"{name}|{label}|tpr"] = np.asarray(r.roc_tpr, np.float32)
    if roc_arrays:
        with atomic_path(out / ROC_FILE, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **roc_arrays)
    ijb_rows = []
    for root in cfg.ijb:
        ijb_rows += _evaluate_ijb(cfg, Path(root), out, plots, show_progress)
    md = ("## IJB (1:1 TAR at FAR; 1:N rank-k and TPIR at FPIR)\n\n" + ijb_table(ijb_rows) + "\n") if ijb_rows else ""
    md += "## Pair sets as the papers report them\n\n" + papers_table(rows) + "\n## Every figure\n\n" + to_markdown(rows)
    if any(r.get("protocol") == "facenet" for r in rows):
        md += "\n## facenet's protocol\n\n" + facenet_table(rows)
    atomic_write_bytes(out / "results.md", md.encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    summary = {"output": str(out), "rows": rows, "ijb": ijb_rows, "table": str(out / "results.md"), "plots": plots}
    atomic_write_json(out / "results.json", summary)
    write_manifest(out, "evaluate", cfg.to_dict(), {f"pair_set_{i}": p for i, p in enumerate(cfg.pair_sets + cfg.ijb)},
                   {"rows": len(rows)})
    return summary


def _evaluate_ijb(cfg: EvalConfig, root: Path, out: Path, plots: list, show_progress: bool) -> list[dict]:
    from ..io_utils import atomic_path
    from ..plots import plot_tar_far
    from .ijb import embed_ijb, evaluate_ijb, read_ijb

    meta = read_ijb(root)
    rows, curves = [], {}
    for m in cfg.models:
        name = Path(m).name
        e, ef, stats = embed_ijb(meta, m, cfg.workers, cfg.backend, show_progress)
        with atomic_path(out / f"ijb_{meta.name}_{name}_features.npz", suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, e=e, ef=ef)
        r = evaluate_ijb(meta, e, ef, cfg.ijb_detector_score)
        if "_roc" in r:
            curves[name] = r.pop("_roc")
        rows.append({"model": name, "set": meta.name, "detections": stats, **r})
    if curves:
        p = out / f"tar_far_{meta.name}.png"
        plot_tar_far(curves, p, title=f"{meta.name.upper()} 1:1 verification")
        plots.append(str(p))
    return rows


def ijb_table(rows: list[dict]) -> str:
    from .ijb import FARS_11, FPIRS_1N, RANKS

    head = (["model", "set"] + [f"TAR@{f:.0e}" for f in FARS_11] + [f"rank-{k}" for k in RANKS]
            + [f"TPIR@FPIR{f:.0e}" for f in FPIRS_1N])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tar = r.get("tar_far", {})
        ident = r.get("identification", {})
        cells = [r["model"], r["set"]] + [f"{100 * tar[f'{f:.0e}']:.2f}" if tar else "" for f in FARS_11]
        cells += [f"{100 * ident[f'rank{k}']:.2f}" if ident else "" for k in RANKS]
        cells += [f"{100 * ident[f'tpir_fpir_{f:.0e}']:.2f}" if ident else "" for f in FPIRS_1N]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def papers_table(rows: list[dict]) -> str:
    """One row per model (and flip), one column per pair set: accuracy and TAR@FAR1e-4, as the
    papers' verification tables."""
    sets = list(dict.fromkeys(r["pair_set"] for r in rows))
    models = list(dict.fromkeys((r["model"], r["flip"]) for r in rows))
    by = {(r["model"], r["flip"], r["pair_set"]): r for r in rows}
    lines = ["| model | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets),
             "| (accuracy / TAR@FAR1e-4) |" + " |" * len(sets)]
    for m, fl in models:
        cells = []
        for s_ in sets:
            r = by.get((m, fl, s_))
            if r is None:
                cells.append("")
            else:
                t4 = r["tar_far_1e-4"]
                cells.append(f"{100 * r['accuracy']:.2f} / {'n/a' if t4 is None else f'{100 * t4:.2f}'}")
        lines.append(f"| {m}{' +flip' if fl else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def facenet_table(rows: list[dict]) -> str:
    """validate_on_lfw's figures: accuracy, VAL@FAR=1e-3 and its FAR, AUC, EER, and (recface's)
    precision and recall at each fold's threshold; the threshold is a distance here."""
    lines = ["| model | pair set | flip | distance | subtract mean | accuracy | VAL@FAR1e-3 | FAR | AUC | EER | "
             "precision | recall | threshold |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("protocol") != "facenet":
            continue
        lines.append(f"| {r['model']} | {r['pair_set']} | {'concat' if r['flip'] else 'no'} | {r['distance']} | "
                     f"{'yes' if r['subtract_mean'] else 'no'} | {100 * r['accuracy']:.2f}% +- {100 * r['std']:.2f} | "
                     f"{100 * r['tar_far_1e-3']:.2f}% | {r['far_1e-3']:.5f} | {r['auc']:.4f} | {r['eer']:.4f} | "
                     f"{r['precision']:.4f} | {r['recall']:.4f} | {r['threshold']:.3f} |")
    return "\n".join(lines) + "\n"


def to_markdown(rows: list[dict]) -> str:
    head = "| model | pair set | flip | pairs | accuracy | threshold | TAR@FAR1e-3 | TAR@FAR1e-4 | AUC | angle same / diff |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pct = lambda v: "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f}%"  # noqa: E731
        lines.append(f"| {r['model']} | {r['pair_set']} | {'yes' if r['flip'] else 'no'} | {r['pairs']} | "
                     f"{pct(r['accuracy'])} +- {100 * r['std']:.2f} | {r['threshold']:.4f} | {pct(r['tar_far_1e-3'])} | "
                     f"{pct(r['tar_far_1e-4'])} | {r['auc']:.4f} | {r['angle_same']:.1f} / {r['angle_diff']:.1f} |")
    return "\n".join(lines) + "\n"
