"""The workbench: notebooks generated from the stage dataclasses and stored without outputs, every
notebook executed through papermill with the `tiny` scenario, reruns skipping unchanged stages,
and misspelt parameters failing cleanly (in a scenario YAML and in a direct papermill run)."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, last_json, run_cli

sys.path.insert(0, str(REPO / "notebooks"))


def test_notebooks_match_the_stage_configs_and_are_stripped():
    import nbformat
    from build_notebooks import parameters_cell, parameters_source

    from recface_lib.stages import NOTEBOOKS, STAGE_ORDER

    names = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert names == sorted([f"{NOTEBOOKS[s]}.ipynb" for s in STAGE_ORDER] + ["quickstart_colab.ipynb"])
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
        # the set-up advice: Colab gets the stack profile (its own GPU TensorFlow kept), never the pinned
        # tensorflow-cpu of `tf`; the text is the template's
        setup = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Set-up")]
        assert len(setup) == 1 and "Colab" in setup[0] and "recface[stack]" in setup[0], NOTEBOOKS[s]
        assert "[tf," not in setup[0] and "recface[tf]" not in setup[0], NOTEBOOKS[s]


def test_papermill_reads_every_parameter_of_every_notebook(caplog):
    """papermill's own parser reads each parameters line (a help comment holding '=' made it skip the
    line with 'Unable to parse line' and warn 'Passed unknown parameter' on every run)."""
    import logging

    import papermill as pm

    from recface_lib.stages import NOTEBOOK_EXTRAS, NOTEBOOKS, STAGE_ORDER, stage

    for s in STAGE_ORDER:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="papermill"):
            found = pm.inspect_notebook(str(REPO / "notebooks" / f"{NOTEBOOKS[s]}.ipynb"))
        assert not [r.message for r in caplog.records if "Unable to parse" in r.getMessage()], s
        assert set(found) == set(stage(s).config_class.field_names()) | set(NOTEBOOK_EXTRAS), s


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, friends_dir, installed_recface):
    """The tiny scenario as a pip user runs it (issue 14's acceptance): the wheel installed without
    -e in a fresh venv, then, from an empty folder, `recface init work && cd work && recface pipeline
    --scenario tiny`."""
    empty = tmp_path_factory.mktemp("user")
    env = {**os.environ, "RECFACE_NO_PROGRESS": "1"}
    init = subprocess.run([str(installed_recface), "init", "work", "--json"], cwd=empty, capture_output=True,
                          text=True, env=env)
    assert init.returncode == 0, init.stderr
    work = empty / "work"
    proc = subprocess.run([str(installed_recface), "pipeline", "--scenario", "tiny", "--json"], cwd=work,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return work, last_json(proc), proc


def test_tiny_scenario_runs_every_notebook(tiny_run):
    work, res, proc = tiny_run
    runs = work / "runs"
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
    md = (work / res["summary"]).read_text()
    for k in ("## train", "## evaluate", "| train | test |", "closed_set_accuracy", "checks"):
        assert k in md
    assert (runs / "tiny" / "tiny.zip").is_file()
    # quiet console: the kernels' own stderr (transport warning, TensorFlow start-up) went to logs
    console = proc.stdout + proc.stderr
    for noise in ("Kernel is running over TCP", "oneDNN custom operations", "cpu_feature_guard"):
        assert noise not in console, noise
    assert "Kernel is running over TCP" in (runs / "tiny" / "train.kernel.log").read_text()


def test_init_keeps_the_users_files(tmp_path, installed_recface):
    (tmp_path / "w" / "papermill_params" / "tiny").mkdir(parents=True)
    (tmp_path / "w" / "papermill_params" / "tiny" / "train.yaml").write_text("# mine\n")
    res = last_json(subprocess.run([str(installed_recface), "init", "w", "--json"], cwd=tmp_path,
                                   capture_output=True, text=True))
    assert res["kept"] == 1 and (tmp_path / "w" / "papermill_params" / "tiny" / "train.yaml").read_text() == "# mine\n"
    assert res["scenarios"] == ["colab", "demo", "distill", "facenet_casia", "facenet_lfw", "ms1mv2", "tiny",
                                "triplet", "triplet_glint360k"] and (tmp_path / "w" / "notebooks" / "03_train.ipynb").is_file()


def test_wheel_lists_every_package():
    """pyproject's explicit package list (needed to map notebooks/ and papermill_params/ into the
    wheel) names every package folder of recface_lib."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "recface_lib").rglob("__init__.py")}
    on_disk |= {"recface_lib._notebooks", "recface_lib._scenarios"}
    on_disk |= {f"recface_lib._scenarios.{d.name}" for d in (REPO / "papermill_params").iterdir() if d.is_dir()}
    assert listed == on_disk


def test_rerun_skips_unchanged_stages(tiny_run, installed_recface):
    work, _, _ = tiny_run
    proc = subprocess.run([str(installed_recface), "pipeline", "--scenario", "tiny", "--from", "build", "--to", "train",
                           "--json"], cwd=work, capture_output=True, text=True)
    res = last_json(proc)
    assert [(s["stage"], s["status"]) for s in res["stages"]] == [("build", "skipped"), ("train", "skipped")]


def test_misspelt_parameter_fails_with_valid_names(tmp_path):
    params = tmp_path / "params"
    shutil.copytree(REPO / "papermill_params" / "tiny", params / "bad")
    (params / "bad" / "train.yaml").write_text("dataset: x\noutput: y\nbackbon: ResNet50\n")
    proc = run_cli("pipeline", "--scenario", "bad", "--params-dir", str(params), "--runs", str(tmp_path / "runs"),
                   "--json", check=False, cwd=tmp_path)
    err = last_json(proc)["error"]
    assert proc.returncode == 1 and "train.yaml: unknown parameter(s) 'backbon'; valid: dataset, dataset_weights, output, backbone" in err
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
    # every field's label carries its help as the hover text (ipywidgets shows a tooltip only without a label)
    import html
    for name, tip in TrainConfig.help().items():
        if name in p.inputs and tip:
            d = p.inputs[name].description
            assert p.inputs[name].description_allow_html and f'title="{html.escape(tip, quote=True)}"' in d, name
            assert d.endswith(f">{name}</span>"), name
    p.inputs["backbone"].value = "ResNet34R"
    assert "ResNet34R + ArcFace: 11.77M" in p.summary.value
    p.plan.add.click()
    assert "400 steps in 3 stages" in p.summary.value
    p.inputs["batch_size"].value = 0
    assert "batch_size" in p.summary.value  # a validation error is shown, not raised
    p.inputs["batch_size"].value = 128
    out = p.config()
    assert out.backbone == "ResNet34R" and len(out.plan) == 3 and out.batch_size == 128


def test_colab_quickstart_runs_to_its_gpu_check_on_cpu(tmp_path):
    """The quickstart under papermill on this CPU, Drive replaced by a local folder, nothing
    installed: it reaches its GPU check, which reports the CPU plan."""
    import nbformat
    import papermill as pm

    from build_notebooks import quickstart

    assert nbformat.read(str(REPO / "notebooks" / "quickstart_colab.ipynb"), as_version=4).cells == quickstart().cells
    out = tmp_path / "q.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "quickstart_colab.ipynb"), str(out), kernel_name="python3",
                        parameters={"install": False, "mount_drive": False, "drive": str(tmp_path / "drive"),
                                    "run": False}, progress_bar=False, cwd=str(tmp_path))
    text = "".join(o.get("text", "") for c in nbformat.read(str(out), as_version=4).cells
                   for o in c.get("outputs", []))
    assert "no GPU: CPU, float32" in text and (tmp_path / "drive").is_dir()


def test_device_plan_rules():
    from recface_lib.train.strategy import plan_for

    assert plan_for([])["line"] == "no GPU: CPU, float32"
    assert plan_for([("Tesla T4", (7, 5))])["line"] == "1 GPU (Tesla T4 (compute 7.5)): mixed_float16, strategy default"
    assert plan_for([("Tesla K80", (3, 7))])["precision"] == "float32"
    assert plan_for([("A100", (8, 0))] * 2)["strategy"] == "mirrored"
    assert plan_for([], tpu=True)["precision"] == "mixed_bfloat16"


def test_training_panel_groups_head_fields_and_plan_plot():
    pytest.importorskip("ipywidgets")
    import dataclasses

    from recface_lib.train.config import TrainConfig
    from recface_lib.widgets import panel

    grouped = [k for names in TrainConfig.GROUPS.values() for k in names]
    assert sorted(grouped) == sorted(f.name for f in dataclasses.fields(TrainConfig))  # each field once
    p = panel(TrainConfig.from_dict({"dataset": "d", "output": "o", "steps_per_epoch": 100,
                                     "head_params": {"easy_margin": True}}))
    assert list(p.head_params.inputs) == ["easy_margin"] and p.config().head_params == {"easy_margin": True}
    p.inputs["head"].value = "AdaFace"
    assert list(p.head_params.inputs) == ["h", "t_alpha"] and p.config().head_params == {}
    first = p.plan_plot.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    p.plan.rows[0][1][1].value = 0.05
    assert p.plan_plot.value != first and p.config().plan[0][1] == 0.05
