"""``recface classify``: the friends test. ``known`` holds ``train/<person>/`` and ``test/<person>/``,
``others`` holds ``train/`` and ``test/`` of unknown people (the layout of lfw_friends16, where
Others live in ``known/others``). Embeds every image once (flip TTA), fits the classifier(s) on
known train, picks each threshold on train data only, and reports on the test faces: a comparison
table of all classifiers, a confusion matrix and an error gallery for the chosen one."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataclasses import dataclass

from ..config import StageConfig, choice, param
from ..data.image_folder import list_images, scan_folder
from ..embedders.factory import is_reference
from ..errors import ConfigError
from ..io_utils import atomic_write_json, load_item
from ..manifest import check_not_input, write_manifest
from ..protocol.verification import flip_sum
from .classifier import CLASSIFIERS, Classifier, choose_by_cv, evaluate_open_set


@dataclass
class ClassifyConfig(StageConfig):
    known: str = param("", "folder with train/<person>/ and test/<person>/", role="input")
    others: str = param("", "folder with train/ and test/ of unknown people ('' : known/others if present)", role="input")
    embedder: str = param("dlib_resnet", "a reference (dlib_resnet, sface), a training run folder or a bundle .zip", role="input")
    classifier: str = choice("auto", ("auto",) + CLASSIFIERS,
                             "auto: chosen by cross-validation on the train faces (see choose_by_cv)")
    target_far: float = param(0.01, "share of train Others allowed past the threshold", lo=0.0, hi=1.0)
    compare: bool = param(True, "also fit the other classifiers for a comparison table")
    output: str = param("", role="output", help="report folder (classifier/, confusion.png, errors.png, comparison.md)")
    workers: int = param(0, "worker processes for embedding (0: the usable cores; one below 256 images)", lo=0, hi=256, runtime=True)
    limit: int = param(0, "quick runs: at most N images per person per split (0: all)", lo=0)

    def validate(self, where=""):
        if not self.known:
            raise ConfigError(f"{where}known: required")


def _known(root: Path, limit: int = 0):
    f = scan_folder(root).select(max_images=limit)
    samples = f.samples()
    return f.classes, [str(p) for p, _ in samples], np.asarray([lab for _, lab in samples], np.int64)


def plot_confusion(cm: np.ndarray, names: list[str], path, title: str):
    from ..plots import _plt, _save

    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.45 * n + 3, 0.45 * n + 2.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(cm.shape[1]), names + (["unknown"] if cm.shape[1] > n else []), rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > cm.max() / 2 else "black")
    ax.set_xlabel("predicted (after the unknown threshold)")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    _save(fig, path)
    return fig


def classify(cfg: ClassifyConfig | dict, show_progress: bool = True) -> dict:
    """``limit``: at most N images per person per split and 5N Others per split (quick runs)."""
    from ..embedders import embed_parallel, model_identity

    if isinstance(cfg, dict):
        cfg = ClassifyConfig.from_dict(cfg)
    check_not_input(cfg.output, cfg.input_paths(), "classify")
    known, others, embedder, classifier = Path(cfg.known), cfg.others or None, cfg.embedder, cfg.classifier
    out, target_far, compare, workers, limit = cfg.output or None, cfg.target_far, cfg.compare, cfg.workers, cfg.limit
    for sub in ("train", "test"):
        if not (known / sub).is_dir():
            raise ConfigError(f"{known}: needs {sub}/<person>/ folders (known people)")
    if others is None and (known / "others").is_dir():
        others = known / "others"
    names, tr_paths, y_tr = _known(known / "train", limit)
    te_names, te_paths, y_te = _known(known / "test", limit)
    missing = [n for n in te_names if n not in names]
    if missing:
        raise ConfigError(f"{known / 'test'}: people not in train/: {', '.join(missing)}")
    y_te = np.asarray([names.index(te_names[i]) for i in y_te], np.int64)
    o_tr = [str(p) for p in list_images(Path(others) / "train")] if others else []
    o_te = [str(p) for p in list_images(Path(others) / "test")] if others else []
    if limit:
        o_tr, o_te = o_tr[:5 * limit], o_te[:5 * limit]
    items = tr_paths + te_paths + o_tr + o_te
    e, ef, stats = embed_parallel(embedder, items, workers, desc="embed faces", show_progress=show_progress)
    emb = flip_sum(e, ef)
    a, b, c = len(tr_paths), len(tr_paths) + len(te_paths), len(tr_paths) + len(te_paths) + len(o_tr)
    E_tr, E_te, E_otr, E_ote = emb[:a], emb[a:b], emb[b:c], emb[c:]

    ident = model_identity(str(embedder))

    def run(kind):
        clf = Classifier(kind, names, embedder=str(embedder), embedder_id=ident).fit(E_tr, y_tr)
        if len(E_otr):
            clf.threshold_from_others(E_otr, target_far)
        else:
            clf.threshold_from_cv()
        return clf, evaluate_open_set(clf, E_te, y_te, E_ote)

    selection = None
    if classifier == "auto":
        classifier, selection = choose_by_cv(E_tr, y_tr, names, E_otr, target_far)
    kinds = [classifier] + [k for k in CLASSIFIERS if k != classifier and compare]
    results = {k: run(k) for k in kinds}
    clf, rep = results[classifier]
    table = [{k2: v for k2, v in r.items() if not k2.startswith("_")} for _, r in results.values()]
    summary = {"embedder": embedder, "classifier": classifier, "auto_selection": selection,
               "known_people": len(names),
               "known_train": len(tr_paths), "known_test": len(te_paths), "others_train": len(o_tr),
               "others_test": len(o_te), "threshold_rule": clf.threshold_rule, "detections": stats,
               **{k: v for k, v in rep.items() if not k.startswith("_")}, "comparison": table}
    if out:
        out = Path(out)
        clf.save(out / "classifier")
        accepted = rep["_score"] > clf.threshold
        pred = np.where(accepted, rep["_pred"], len(names))
        cm = np.zeros((len(names), len(names) + 1), np.int64)
        np.add.at(cm, (y_te, pred), 1)
        plot_confusion(cm, names, out / "confusion.png",
                       f"{Path(embedder).name} + {classifier}: {100 * rep['closed_set_accuracy']:.1f}% closed set")
        errs = [(te_paths[i], f"{names[y_te[i]][:9]}>{'unknown' if pred[i] == len(names) else names[pred[i]][:9]}")
                for i in np.flatnonzero(pred != y_te)]
        errs += [(o_te[i], f"Other>{names[p][:12]}") for i, p in
                 enumerate(rep["_others_pred"]) if rep["_others_score"][i] > clf.threshold]
        from ..plots import plot_face_grid
        if errs:
            plot_face_grid([load_item(p) for p, _ in errs[:48]], [t for _, t in errs[:48]], out / "errors.png",
                           title=f"errors: {len(errs)}")
        summary.update(classifier_dir=str(out / "classifier"), confusion=str(out / "confusion.png"),
                       errors_gallery=str(out / "errors.png") if errs else None)
        atomic_write_json(out / "report.json", summary)
        write_table(table, out / "comparison.md")
        write_manifest(out, "classify", cfg.to_dict(), {"known": known, "others": others,
                                                        "embedder": None if is_reference(embedder) else embedder},
                       {"known_people": len(names)})
    return summary


def write_table(rows: list[dict], path) -> Path:
    from ..io_utils import atomic_write_bytes

    cols = ["classifier", "closed_set_accuracy", "threshold", "known_correct_accepted_rate", "wrong_person_accepts",
            "known_rejected", "others_false_accept_rate"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return Path(path)
