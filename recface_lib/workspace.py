"""Where the stage notebooks and scenario YAMLs are, from a source checkout or a pip install, and
``recface init DIR``: a working folder a user edits.

The files live once, in the repository's ``notebooks/`` and ``papermill_params/``; the wheel
carries the same files as ``recface_lib/_notebooks/`` and ``recface_lib/_scenarios/`` (mapped in
``pyproject.toml``). A working folder (``recface init``) holds copies a user may edit, its own
scenarios and ``runs/``. Lookup order, for a notebook and for a scenario: the working folder (the
current directory), then the installed package, then the source checkout."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import ConfigError

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent


def _shipped(packaged: str, in_checkout: str, what: str) -> Path:
    """A folder that came with recface: inside the installed package, else in the source checkout."""
    for d in (PACKAGE / packaged, CHECKOUT / in_checkout):
        if d.is_dir():
            return d
    raise ConfigError(f"recface's {what} are missing (looked in {PACKAGE / packaged} and {CHECKOUT / in_checkout}); "
                      "reinstall recface")


def shipped_notebooks() -> Path:
    return _shipped("_notebooks", "notebooks", "stage notebooks")


def shipped_scenarios() -> Path:
    return _shipped("_scenarios", "papermill_params", "scenarios")


def notebook_path(name: str, workdir: str | os.PathLike | None = None) -> Path:
    """``<workdir>/notebooks/<name>.ipynb`` when the working folder has its own copy, else the shipped one."""
    own = Path(workdir or Path.cwd()) / "notebooks" / f"{name}.ipynb"
    return own if own.is_file() else shipped_notebooks() / f"{name}.ipynb"


def scenario_roots(workdir: str | os.PathLike | None = None) -> list[Path]:
    """Folders holding scenarios, in lookup order: the working folder's ``papermill_params/``, the shipped ones."""
    own = Path(workdir or Path.cwd()) / "papermill_params"
    roots = [own] if own.is_dir() else []
    shipped = shipped_scenarios()
    return roots + ([shipped] if not roots or shipped.resolve() != own.resolve() else [])


def find_scenario(scenario: str, params_dir: str | os.PathLike | None = None) -> Path:
    """The folder of ``scenario``: under ``params_dir`` when given, else the first of ``scenario_roots``."""
    roots = [Path(params_dir)] if params_dir else scenario_roots()
    for r in roots:
        if (r / scenario).is_dir():
            return r / scenario
    valid = sorted({p.name for r in roots if r.is_dir() for p in r.iterdir() if p.is_dir()})
    raise ConfigError(f"scenario: unknown {scenario!r} (looked in {', '.join(map(str, roots))}); "
                      f"valid: {', '.join(valid)}")


def init_workdir(target: str | os.PathLike) -> dict:
    """Write a working folder: ``notebooks/`` (the stage notebooks), ``papermill_params/`` (every
    shipped scenario, to edit or copy into your own), ``runs/``. Existing files are kept, never
    replaced; the summary lists what was written and what was kept."""
    t = Path(target)
    if t.exists() and not t.is_dir():
        raise ConfigError(f"init: {t} exists and is not a folder")
    written, kept = [], []
    sources = [(shipped_notebooks(), t / "notebooks", "*.ipynb"), (shipped_scenarios(), t / "papermill_params", "*/*.yaml"),
               (shipped_scenarios(), t / "papermill_params", "*/*.txt")]
    for src, dst, pattern in sources:
        for f in sorted(src.glob(pattern)):
            q = dst / f.relative_to(src)
            if q.exists():
                kept.append(str(q))
                continue
            q.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, q)
            written.append(str(q))
    (t / "runs").mkdir(parents=True, exist_ok=True)
    readme = t / "README.md"
    if not readme.exists():
        readme.write_text(
            "# recface working folder\n\n"
            "```bash\n"
            "recface data lfw                         # LFW + pairs.txt (+ lfw_friends16) into the data folder, checked\n"
            "                                         # (--from PATH: a local copy; RECFACE_DATA=/path: another data folder)\n"
            "recface pipeline --scenario tiny         # or demo, distill, facenet_lfw, triplet, colab, facenet_casia, triplet_glint360k, ms1mv2, or a folder you add to papermill_params/\n"
            "jupyter lab notebooks/                   # the same stages interactively\n"
            "```\n\n"
            "`papermill_params/<scenario>/<stage>.yaml` are the stages' parameters (edit them, or copy a scenario\n"
            "to a new folder for your own data); results go to `runs/`. Notebooks here replace the shipped\n"
            "ones for `recface pipeline` run from this folder.\n")
        written.append(str(readme))
    return {"folder": str(t), "written": len(written), "kept": len(kept),
            "scenarios": sorted(p.name for p in (t / "papermill_params").iterdir() if p.is_dir())}
