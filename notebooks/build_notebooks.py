"""Writes the stage notebooks (outputs empty) from the stage dataclasses, so every notebook's
``parameters`` cell lists exactly its stage's fields and defaults. Run after changing a config:
    .venv/bin/python notebooks/build_notebooks.py
tests/test_notebooks.py fails when a committed notebook differs from what this writes."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import nbformat

from recface_lib.stages import NOTEBOOKS, STAGE_ORDER, _configs

HERE = Path(__file__).resolve().parent

INTRO = {
    "convert": ("Convert", "InsightFace `.rec/.idx` training sets to identity folders (`rec2jpg`), `.bin` pair "
                "sets to images (`bin2jpg`), or a folder + `pairs.txt` to a `.bin` (`pairs2bin`). No mxnet needed.",
                "`mode`, the input path(s), `output`; `folds` keeps part of a pairs file."),
    "align": ("Align", "Detects faces (MTCNN, dlib HOG/MMOD), finds 5 landmarks and warps each face onto the 112x112 "
              "ArcFace template. Reads an identity folder or a `.bin`; writes a NEW folder or `.bin` (never in place), "
              "a report with an aligned-face grid and the failures.",
              "`detector`, `method`, `size`, `on_failure`; `min_images`/`max_images`/`exclude_pairs` select training people."),
    "build": ("Build dataset", "Aligned identity folder -> shuffled, sharded TFRecords + `metadata.json`, an optional "
              "test split and a verification `.bin` of pairs built from it.",
              "`shards`/`shard_size_mb`, `min_images`, `num_classes`, `test_split`/`test_samples`, `test_max_pairs`."),
    "train": ("Train", "A backbone + margin head on the TFRecords with the staged plan (epochs, lr, val_save, "
              "val_per_epoch), validation on pair sets, checkpoints every N steps; rerunning resumes.",
              "`backbone`, `head`, `margin`, `scale`, `plan`, `batch_size`, `val_sets`, `copy_to` (Drive on Colab), "
              "`precision`, `jit_compile`, `strategy`."),
    "evaluate": ("Evaluate", "Models (training runs, bundles, the `dlib_resnet` reference) on pair sets: 10-fold "
                 "accuracy, TAR@FAR, AUC in one table, ROC curves of all models on one figure.",
                 "`models`, `pair_sets`, `flip`, `folds`."),
    "classify": ("Classifier", "The friends test: a classifier on embeddings of known people, an unknown-person "
                 "threshold chosen on TRAIN data only (train Others), then accuracy, wrong-person accepts and Others "
                 "falsely accepted on the test faces; confusion matrix and error gallery.",
                 "`known`, `others`, `embedder`, `classifier`, `target_far`."),
    "export": ("Export", "A production bundle (.keras, SavedModel, ONNX, TFLite, `recface.json`, classifier), every "
               "format checked against Keras on real faces; then photos identified with the bundle via onnxruntime.",
               "`run`, `output`, `check_images`, `classifier`, `identify`."),
}
PANEL = ("align", "train")


def notebook(stage: str) -> nbformat.NotebookNode:
    cls, _ = _configs()[stage]
    title, what, matters = INTRO[stage]
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    md = (f"# {NOTEBOOKS[stage][:2]} {title}\n\n{what}\n\n**Parameters that matter:** {matters}\n\n"
          "Run headless with `recface pipeline --scenario demo` (papermill; parameters from "
          f"`papermill_params/<scenario>/{stage}.yaml`). A misspelt parameter stops the notebook in the next cell "
          "with the valid names. On Colab, run the set-up cell first.")
    params = ["# parameters (papermill replaces these; names are the fields of "
              f"{cls.__name__})"]
    base = cls()
    for f in dataclasses.fields(cls):
        params.append(f"{f.name} = {getattr(base, f.name)!r}  # {f.metadata.get('help', '')}".rstrip())
    params += ["show_panel = True  # interactive: show the widget panel (the pipeline sets False)",
               "summary_path = ''  # where the pipeline collects this stage's summary",
               "mount_drive = False  # Colab: mount Google Drive (for copy_to / Drive paths)"]
    setup = ("# Colab: install recface from its repository first, e.g.\n"
             "#   !pip install -q 'recface[tf,detect,export] @ git+<repository URL>'\n"
             "from recface_lib.notebook import colab_setup, show_results\n"
             "from recface_lib.stages import check_namespace, run_stage\n"
             "colab_setup(mount_drive)")
    cells = [nbformat.v4.new_markdown_cell(md),
             nbformat.v4.new_code_cell("\n".join(params), metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell(setup),
             nbformat.v4.new_code_cell(f"cfg = check_namespace({stage!r}, globals())  # validated: unknown names fail here\ncfg")]
    if stage in PANEL:
        cells += [nbformat.v4.new_code_cell(
                      "if show_panel:  # JupyterLab: tweak the parameters here, then run the next cell\n"
                      "    from recface_lib.widgets import panel\n"
                      "    form = panel(cfg)\n"
                      "    display(form.widget)"),
                  nbformat.v4.new_code_cell("if show_panel:\n    cfg = form.config()")]
    cells += [nbformat.v4.new_code_cell(f"result = run_stage({stage!r}, cfg)"),
              nbformat.v4.new_code_cell(f"show_results({stage!r}, result, summary_path);")]
    for i, c in enumerate(cells):
        c.id = f"{stage}-{i}"  # stable ids: regenerating gives the same file
    nb.cells = cells
    return nb


def write_all() -> list[Path]:
    out = []
    for stage in STAGE_ORDER:
        p = HERE / f"{NOTEBOOKS[stage]}.ipynb"
        nbformat.write(notebook(stage), str(p))
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write_all():
        print(p)
