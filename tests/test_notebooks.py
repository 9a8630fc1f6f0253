"""The workbench: notebooks generated from the stage dataclasses and stored without outputs, every
notebook executed through papermill with the `tiny` scenario, reruns skipping unchanged stages,
and misspelt parameters failing cleanly (in a scenario YAML and in a direct papermill run)."""
import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO, last_json, run_cli

sys.path.insert(0, str(REPO / "notebooks"))


def test_notebooks_match_the_stage_configs_and_are_stripped():
    import nbformat
    from build_notebooks import parameters_cell, parameters_source

    from recface_lib.stages import NOTEBOOKS, STAGE_ORDER

    names = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert names == sorted(f"{NOTEBOOKS[s]}.ipynb" for s in STAGE_ORDER)
    for s in STAGE_ORDER:
        nb = nbformat.read(str(REPO / "notebooks" / f"{NOTEBOOKS[s]}.ipynb"), as_version=4)
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, f"{NOTEBOOKS[s]}: outputs not stripped"
        # only the parameters cell is generated: other cells are the notebook's own (users may add more)
        assert parameters_cell(nb).source == parameters_source(s), \
            f"{NOTEBOOKS[s]}: parameters cell differs from the stage config (run notebooks/build_notebooks.py)"
        # thin: no function definitions in notebooks
        assert not any("def " in c.source for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, friends_dir):
    runs = tmp_path_factory.mktemp("runs")
    return runs, last_json(run_cli("pipeline", "--scenario", "tiny", "--runs", str(runs), "--force", "--json",
                                   cwd=_tiny_cwd(runs)))


def _tiny_cwd(runs: Path) -> Path:
    # the tiny YAMLs write to runs/tiny/...; run from a scratch folder so the repository stays clean
    cwd = runs.parent / "cwd"
    cwd.mkdir(exist_ok=True)
    return cwd


def test_tiny_scenario_runs_every_notebook(tiny_run):
    runs, res = tiny_run
    assert [s["stage"] for s in res["stages"]] == ["convert", "align", "build", "train", "evaluate", "classify", "export"]
    assert all(s["status"] == "ran" for s in res["stages"])
    import nbformat
    for nbp in sorted((runs / "tiny").glob("0*.ipynb")):
        nb = nbformat.read(str(nbp), as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, nbp
    train_nb = nbformat.read(str(runs / "tiny" / "03_train.ipynb"), as_version=4)
    images = [o for c in train_nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the training notebook shows its curves inline"
    md = Path(res["summary"]).read_text()
    for k in ("## train", "## evaluate", "| train | test |", "closed_set_accuracy", "checks"):
        assert k in md
    bundle = runs.parent / "cwd" / "runs" / "tiny" / "tiny.zip"
    assert bundle.is_file()


def test_rerun_skips_unchanged_stages(tiny_run):
    runs, _ = tiny_run
    res = last_json(run_cli("pipeline", "--scenario", "tiny", "--runs", str(runs), "--from", "build", "--to", "train",
                            "--json", cwd=_tiny_cwd(runs)))
    assert [(s["stage"], s["status"]) for s in res["stages"]] == [("build", "skipped"), ("train", "skipped")]


def test_misspelt_parameter_fails_with_valid_names(tmp_path):
    params = tmp_path / "params"
    shutil.copytree(REPO / "papermill_params" / "tiny", params / "bad")
    (params / "bad" / "train.yaml").write_text("dataset: x\noutput: y\nbackbon: ResNet50\n")
    proc = run_cli("pipeline", "--scenario", "bad", "--params-dir", str(params), "--runs", str(tmp_path / "runs"),
                   "--json", check=False, cwd=tmp_path)
    err = last_json(proc)["error"]
    assert proc.returncode == 1 and "train.yaml: unknown parameter(s) 'backbon'; valid: dataset, output, backbone" in err
    assert not (tmp_path / "runs" / "bad" / "00_convert.ipynb").exists()  # nothing ran


def test_direct_papermill_run_rejects_unknown_parameter(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(REPO / "notebooks" / "02_build_dataset.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"inptu": "x", "output": str(tmp_path / "o")}, kernel_name="python3",
                            progress_bar=False, cwd=str(tmp_path))
    assert "unknown parameter(s) 'inptu'; valid: input, output" in str(e.value.evalue)


def test_widget_panel_builds_config_and_live_summary():
    pytest.importorskip("ipywidgets")
    from recface_lib.train.config import TrainConfig
    from recface_lib.widgets import panel

    cfg = TrainConfig.from_dict({"dataset": "d", "output": "o", "steps_per_epoch": 100,
                                 "plan": [[2, 0.1, False, 1], [1, 0.01, True, 4]]})
    p = panel(cfg)
    assert "MobileFaceNetV2 + ArcFace: 1.22M" in p.summary.value and "300 steps in 2 stages" in p.summary.value
    p.inputs["backbone"].value = "ResNet34R"
    assert "ResNet34R + ArcFace: 11.77M" in p.summary.value
    p.plan.add.click()
    assert "400 steps in 3 stages" in p.summary.value
    p.inputs["batch_size"].value = 0
    assert "batch_size" in p.summary.value  # a validation error is shown, not raised
    p.inputs["batch_size"].value = 128
    out = p.config()
    assert out.backbone == "ResNet34R" and len(out.plan) == 3 and out.batch_size == 128
