"""The stage registry: every stage is declared once, here, as (config dataclass, run function,
notebook, CLI verb). The CLI's options (``cli.py``), the notebooks' ``parameters`` cells
(``notebooks/build_notebooks.py``), papermill/YAML validation (``pipeline.py``) and the widget
panels (``widgets.py``) are all derived from this table and the dataclasses' fields.

``run_stage(name, cfg)`` validates the parameters (unknown names and wrong types fail at once,
listing the valid names), runs the stage and returns a :class:`StageResult`; notebooks, the CLI
and ``recface pipeline`` all go through it, so a stage behaves the same everywhere."""
from __future__ import annotations

import importlib
import types
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class Stage:
    name: str
    config: str          # "module:Class" (imported on use: `recface --help` stays light)
    run: str             # "module:function", called as function(cfg, show_progress)
    notebook: str
    help: str            # the CLI verb's one-line description
    title: str
    intro: str           # the notebook's introduction
    aliases: dict = field(default_factory=dict)  # extra verb -> fixed field values (e.g. rec2jpg -> mode)

    @property
    def config_class(self):
        mod, cls = self.config.split(":")
        return getattr(importlib.import_module(f"recface_lib.{mod}"), cls)

    @property
    def function(self):
        mod, fn = self.run.split(":")
        return getattr(importlib.import_module(f"recface_lib.{mod}"), fn)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("convert", "convert:ConvertConfig", "convert:run", "00_convert",
          "InsightFace .rec/.idx -> identity folders, .bin <-> images, pairs.txt or bcolz -> .bin",
          "Convert", "InsightFace `.rec/.idx` training sets to identity folders (`rec2jpg`), `.bin` pair sets to "
          "images (`bin2jpg`), a folder + `pairs.txt` (`pairs2bin`) or a bcolz carray set (`carray2bin`) to a "
          "`.bin`. No mxnet needed.",
          aliases={"rec2jpg": {"mode": "rec2jpg"}, "bin2jpg": {"mode": "bin2jpg"},
                   "pairs2bin": {"mode": "pairs2bin"}, "carray2bin": {"mode": "carray2bin"}}),
    Stage("align", "align.config:AlignConfig", "align.pipeline:align", "01_align",
          "detect faces, 5 landmarks, align to the ArcFace template (folders or .bin); records the contract",
          "Align", "Detects faces (MTCNN, dlib HOG/MMOD), finds 5 landmarks and warps each face onto the ArcFace "
          "template. Reads an identity folder or a `.bin`; writes a NEW folder or `.bin` (never in place), a "
          "manifest with the **preprocessing contract** that training and production repeat, and a report with "
          "an aligned-face grid and the failures."),
    Stage("build", "build:BuildConfig", "build:build", "02_build_dataset",
          "identity folder or .rec -> shuffled sharded TFRecords + metadata.json (+ test folder and pair .bin)",
          "Build dataset", "Aligned identity folder (or InsightFace `.rec`) -> shuffled, sharded TFRecords + "
          "`metadata.json` carrying the preprocessing contract, an optional test split and a verification `.bin` "
          "of pairs built from it."),
    Stage("teach", "teach:TeachConfig", "teach:teach", "02b_teach",
          "a teacher's embeddings of every record (and its mirror) of a built dataset, once, for distillation",
          "Teacher embeddings", "For distillation: a teacher (`dlib_resnet`, `sface`, a training run, or a bundle) embeds every "
          "face of the built dataset and its mirror image, once. It sees the original photo behind each aligned face "
          "when it aligns differently from the data. The embeddings go to their own folder, one file per shard, "
          "resumable and tied to the teacher's weights and the dataset's content; `train.teacher` points at it."),
    Stage("train", "train.config:TrainConfig", "train.trainer:train", "03_train",
          "train a backbone + margin head on TFRecords with the staged plan (resumes by default)",
          "Train", "A backbone + margin head on the TFRecords with the staged plan (epochs, lr, val_save, "
          "val_per_epoch), validation on pair sets, checkpoints every N steps; rerunning resumes. `model.json` "
          "carries the data's preprocessing contract plus the model's input size and normalisation."),
    Stage("evaluate", "evaluate.report:EvalConfig", "evaluate.report:evaluate", "04_evaluate",
          "models x pair sets: 10-fold accuracy, TAR@FAR, AUC table, ROC and similarity plots",
          "Evaluate", "Models (training runs, bundles, the `dlib_resnet` and `sface` references) on pair sets: 10-fold accuracy, "
          "TAR@FAR, AUC in one table, ROC curves of all models on one figure per set.",
          aliases={"verify": {}}),
    Stage("classify", "evaluate.classify:ClassifyConfig", "evaluate.classify:classify", "05_classifier",
          "identify known people and reject unknown ones (threshold chosen on train data only)",
          "Classifier", "The friends test: a classifier on embeddings of known people, an unknown-person threshold "
          "chosen on TRAIN data only (train Others), then accuracy, wrong-person accepts and Others falsely "
          "accepted on the test faces; confusion matrix and error gallery."),
    Stage("export", "export:ExportConfig", "export:run", "06_export",
          "production bundle (.keras, SavedModel, ONNX, TFLite, recface.json with the contract), formats checked",
          "Export", "A production bundle (.keras, SavedModel, ONNX, TFLite, `recface.json` with the preprocessing "
          "contract, classifier), every format checked against Keras on real faces; then photos identified with "
          "the bundle via onnxruntime."),
    Stage("compare", "experiments:CompareConfig", "experiments:compare", "07_compare",
          "runs side by side: the parameters that differ, metrics (validation final and best, evaluation), "
          "training curves and ROC curves overlaid",
          "Compare runs", "Training runs, pipeline folders or a whole sweep (`recface sweep`) side by side: one table "
          "of the parameters that differ and every metric, the training curves of all runs on one figure and "
          "their ROC curves on one figure per pair set."),
    Stage("watch", "watch.stage:WatchConfig", "watch.stage:watch", "08_watch",
          "recognise people on a video file, a camera or a stream: tracks, voting, events, annotated video",
          "Watch", "The production loop: frames of a video file, a camera or a stream, faces detected every N frames "
          "and tracked between, each track named by voting over its recent embeddings against a gallery (any "
          "embedder: a bundle, a run, `sface`, `dlib_resnet`) or a bundle's classifier; `appeared` / `identified` / "
          "`left` events as JSON lines, an optional command on `identified`, the gallery re-read when it changes, "
          "an annotated video and a sheet of the frames where someone was identified."),
)}
STAGE_ORDER = tuple(STAGES)
NOTEBOOKS = {s.name: s.notebook for s in STAGES.values()}
# notebook variables that are not stage parameters
NOTEBOOK_EXTRAS = {"show_panel": (True, "interactive: show the widget panel (the pipeline sets False)"),
                   "summary_path": ("", "where the pipeline collects this stage's summary"),
                   "mount_drive": (False, "Colab: mount Google Drive (for copy_to / Drive paths)")}
FIGURE_KEYS = ("aligned_grid", "failures_grid", "curves", "confusion", "errors_gallery")


@dataclass
class StageResult:
    """What a stage run gives back: its summary (JSON-able), the PNG figures and Markdown tables
    it wrote."""

    stage: str
    summary: dict
    figures: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, stage: str, summary: dict) -> "StageResult":
        figs = [summary[k] for k in FIGURE_KEYS if isinstance(summary.get(k), str)]
        figs += [p for p in summary.get("plots") or [] if isinstance(p, str)]
        tables = [summary["table"]] if isinstance(summary.get("table"), str) else []
        return cls(stage, summary, [f for f in figs if Path(f).is_file()], [t for t in tables if Path(t).is_file()])

    def __getitem__(self, key):  # result["accuracy"] as before
        return self.summary[key]

    def get(self, key, default=None):
        return self.summary.get(key, default)


def stage(name: str) -> Stage:
    if name not in STAGES:
        raise ConfigError(f"stage: unknown {name!r}; valid: {', '.join(STAGE_ORDER)}")
    return STAGES[name]


def stage_config(name: str, params: dict, source: str = ""):
    return stage(name).config_class.from_dict(params, source=source or f"{name} parameters")


def run_stage(name: str, cfg, show_progress: bool = True) -> StageResult:
    st = stage(name)
    if isinstance(cfg, dict):
        cfg = stage_config(name, cfg)
    if not isinstance(cfg, st.config_class):
        raise ConfigError(f"{name}: expected a {st.config_class.__name__}, got {type(cfg).__name__}")
    return StageResult.of(name, st.function(cfg, show_progress))


def check_namespace(name: str, ns: dict):
    """For a notebook: the config from its parameter variables; any other user variable defined by
    then (a misspelt papermill parameter) is an error listing the valid names."""
    cls = stage(name).config_class
    valid = cls.field_names()
    ignore = {"In", "Out", "get_ipython", "exit", "quit", "open", *NOTEBOOK_EXTRAS}
    extra = [k for k, v in ns.items() if not k.startswith("_") and k not in valid and k not in ignore
             and not isinstance(v, types.ModuleType) and not callable(v)]
    if extra:
        raise ConfigError(f"{name} notebook: unknown parameter(s) {', '.join(map(repr, sorted(extra)))}; "
                          f"valid: {', '.join(valid)}")
    return cls.from_namespace(ns, source=f"{name} notebook parameters")
