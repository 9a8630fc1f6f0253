"""The pipeline's stages in order: name -> notebook, parameter dataclass, library function.

``run_stage(name, params)`` validates the parameters (unknown names and wrong types fail at once,
listing the valid names) and runs the stage; notebooks and ``recface pipeline`` go through here,
so a stage behaves the same from a notebook, papermill, the CLI or a script."""
from __future__ import annotations

from dataclasses import dataclass

from .config import StageConfig, choice, param
from .errors import ConfigError


@dataclass
class ConvertConfig(StageConfig):
    mode: str = choice("pairs2bin", ("pairs2bin", "rec2jpg", "bin2jpg"), "what to convert")
    images: str = param("", "pairs2bin: image folder the pairs refer to")
    pairs: str = param("", "pairs2bin: pairs.txt")
    folds: list | None = param(None, "pairs2bin: only these folds (0-based)")
    rec: str = param("", "rec2jpg: InsightFace train.rec (train.idx beside it)")
    bin: str = param("", "bin2jpg: verification .bin")
    limit_classes: int = param(0, "rec2jpg: first N identities only")
    output: str = param("", "output file (.bin) or folder")


@dataclass
class ClassifyConfig(StageConfig):
    known: str = param("", "folder with train/<person>/ and test/<person>/")
    others: str = param("", "folder with train/ and test/ of unknown people ('' : known/others)")
    embedder: str = param("dlib_resnet", "dlib_resnet, a training run folder or a bundle .zip")
    classifier: str = choice("svc_lin", ("svc_lin", "svc_rbf", "knn", "logreg", "centroid"), "classifier")
    target_far: float = param(0.01, "share of train Others allowed past the threshold")
    compare: bool = param(True, "also fit the other classifiers for a comparison table")
    output: str = param("", "report folder")
    workers: int = param(1, "worker processes for embedding")
    limit: int = param(0, "quick runs: at most N images per person per split (0: all)")


@dataclass
class ExportConfig(StageConfig):
    run: str = param("", "training run folder")
    output: str = param("", "bundle path (.zip)")
    check_images: str = param("", "face photos the exported formats are checked on")
    classifier: str = param("", "classifier folder fitted with this model ('' : none)")
    weights: str = param("final", "final, or a validation set's best weights")
    formats: list = param(["keras", "saved_model", "onnx", "tflite"], "formats in the bundle")
    identify: list = param([], "photos to identify with the bundle (onnxruntime) after export")


def _convert(c: ConvertConfig, show_progress=True):
    from . import convert
    if c.mode == "pairs2bin":
        return convert.pairs2bin(c.images, c.pairs, c.output, folds=c.folds, show_progress=show_progress)
    if c.mode == "rec2jpg":
        return convert.rec2jpg(c.rec, c.output, None, c.limit_classes, show_progress=show_progress)
    return convert.bin2jpg(c.bin, c.output, show_progress=show_progress)


def _align(c, show_progress=True):
    from .align.pipeline import align
    return align(c, show_progress)


def _build(c, show_progress=True):
    from .build import build
    return build(c, show_progress)


def _train(c, show_progress=True):
    from .train.trainer import train
    return train(c, show_progress)


def _evaluate(c, show_progress=True):
    from .evaluate.report import evaluate
    return evaluate(c, show_progress)


def _classify(c: ClassifyConfig, show_progress=True):
    from .evaluate.classify import classify
    return classify(c.known, c.others or None, c.embedder, c.classifier, c.output, c.target_far, c.compare, c.workers,
                    show_progress, c.limit)


def _export(c: ExportConfig, show_progress=True):
    from .export import export
    res = export(c.run, c.output, c.check_images, c.classifier or None, c.weights, tuple(c.formats))
    if c.identify:
        from .inference import FaceRecognizer
        rec = FaceRecognizer.from_bundle(c.output, "onnx")
        res["identified"] = {p: [f.to_json() for f in rec.identify(p)] for p in c.identify}
    return res


def _configs():
    from .align.config import AlignConfig
    from .build import BuildConfig
    from .evaluate.report import EvalConfig
    from .train.config import TrainConfig
    return {"convert": (ConvertConfig, _convert), "align": (AlignConfig, _align), "build": (BuildConfig, _build),
            "train": (TrainConfig, _train), "evaluate": (EvalConfig, _evaluate), "classify": (ClassifyConfig, _classify),
            "export": (ExportConfig, _export)}


STAGE_ORDER = ("convert", "align", "build", "train", "evaluate", "classify", "export")
NOTEBOOKS = {"convert": "00_convert", "align": "01_align", "build": "02_build_dataset", "train": "03_train",
             "evaluate": "04_evaluate", "classify": "05_classifier", "export": "06_export"}


def stage_config(stage: str, params: dict, source: str = ""):
    if stage not in STAGE_ORDER:
        raise ConfigError(f"stage: unknown {stage!r}; valid: {', '.join(STAGE_ORDER)}")
    cls, _ = _configs()[stage]
    return cls.from_dict(params, source=source or f"{stage} parameters")


def run_stage(stage: str, cfg, show_progress: bool = True) -> dict:
    _, fn = _configs()[stage]
    if isinstance(cfg, dict):
        cfg = stage_config(stage, cfg)
    return fn(cfg, show_progress)


def check_namespace(stage: str, ns: dict):
    """For a notebook: the config from its parameter variables; any other user variable defined by
    then (a misspelt papermill parameter) is an error listing the valid names."""
    import types

    cls, _ = _configs()[stage]
    valid = cls.field_names()
    ignore = {"In", "Out", "get_ipython", "exit", "quit", "open", "show_panel", "summary_path", "mount_drive"}
    extra = [k for k, v in ns.items() if not k.startswith("_") and k not in valid and k not in ignore
             and not isinstance(v, types.ModuleType) and not callable(v)]
    if extra:
        raise ConfigError(f"{stage} notebook: unknown parameter(s) {', '.join(map(repr, sorted(extra)))}; "
                          f"valid: {', '.join(valid)}")
    return cls.from_namespace(ns, source=f"{stage} notebook parameters")
