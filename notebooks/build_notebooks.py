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
        md("## Set-up\nOn Colab, first install recface from its repository, e.g. "
           "`!pip install -q 'recface[tf,detect,export] @ git+<repository URL>'`."),
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


def write_all(new: bool = False) -> list[Path]:
    out = []
    for stage, st in STAGES.items():
        p = HERE / f"{st.notebook}.ipynb"
        if new or not p.is_file():
            nb = notebook(stage)
        else:
            nb = nbformat.read(str(p), as_version=4)
            parameters_cell(nb).source = parameters_source(stage)
        nbformat.write(nb, str(p))
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write_all(new="--new" in sys.argv):
        print(p)
