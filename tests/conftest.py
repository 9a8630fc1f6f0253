import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECFACE_DATA", REPO.parent / "shared" / "data")).resolve()

os.environ.setdefault("RECFACE_NO_PROGRESS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _need(path: Path) -> Path:
    if not path.exists():
        msg = f"real photos not found at {path} (set RECFACE_DATA or put shared/data beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return _need(DATA / "lfw")


@pytest.fixture(scope="session")
def friends_dir() -> Path:
    return _need(DATA / "lfw_friends16")


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    return _need(DATA / "orl_faces")


def run_cli(*args: str, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
    """Run the installed ``recface`` entry point in a subprocess (as a user would)."""
    exe = Path(sys.executable).with_name("recface")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "recface_lib.cli"]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "RECFACE_NO_PROGRESS": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"recface {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    import json

    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no output; stderr:\n{proc.stderr}"
    return json.loads(lines[-1])


@pytest.fixture(scope="session")
def recface_wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout (no build isolation: nothing downloaded)."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(dist), str(REPO)], check=True, capture_output=True)
    return next(dist.glob("recface-*.whl"))


@pytest.fixture(scope="session")
def installed_recface(tmp_path_factory, recface_wheel) -> Path:
    """recface as a user gets it from pip: the wheel built from this checkout, installed without -e
    into a fresh venv. Its dependencies come from the test interpreter's site-packages (a .pth
    file), so nothing is downloaded. Returns the venv's ``recface`` executable."""
    import sysconfig

    root = tmp_path_factory.mktemp("wheel")
    wheel = recface_wheel
    venv = root / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "recface-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--ignore-installed",
                    str(wheel)], check=True, capture_output=True, cwd=root)
    where = subprocess.run([str(py), "-c", "import recface_lib; print(recface_lib.__file__)"], check=True,
                           capture_output=True, text=True, cwd=root).stdout.strip()
    assert where.startswith(purelib), f"the installed copy is not the one imported: {where}"
    return venv / "bin" / "recface"


@pytest.fixture(scope="session")
def trained(friends_dir, tmp_path_factory):
    """One tiny model for the export, inference and IJB tests: friends16 aligned with MTCNN at 64 px,
    built, trained briefly (deterministic), a classifier fitted with it, exported."""
    root = tmp_path_factory.mktemp("export")
    run_cli("align", "--input", str(friends_dir / "train"), "--output", str(root / "aligned"), "--size", "64", "--json")
    run_cli("build", "--input", str(root / "aligned"), "--output", str(root / "ds"), "--shards", "2", "--json")
    run_cli("train", "--dataset", str(root / "ds"), "--output", str(root / "run"), "--set", "input_size=64",
            "--set", "batch_size=32", "--set", "steps_per_epoch=10", "--set", "plan=[[6, 0.1], [2, 0.01]]",
            "--set", "scale=32", "--set", "margin=0.3", "--set", "embd_shape=128", "--set", "tensorboard=false",
            "--set", "deterministic=true", "--json")
    clf = last_json(run_cli("classify", "--known", str(friends_dir), "--embedder", str(root / "run"),
                            "--output", str(root / "clf"), "--no-compare", "--json"))
    bundle = root / "friends.zip"
    exp = last_json(run_cli("export", "--run", str(root / "run"), "--output", str(bundle), "--check-images",
                            str(root / "aligned" / "Andre_Agassi"), "--classifier", str(root / "clf" / "classifier"),
                            "--json"))
    return {"root": root, "bundle": bundle, "export": exp, "classify": clf}


# -- training helpers shared by test_train, test_train_scale, test_partial_fc, test_distill ---------
@pytest.fixture(scope="session")
def ds(friends_dir, tmp_path_factory):
    """friends16's train photos built into 2 shards + a 4-per-person test split (a tiny dataset)."""
    from recface_lib.build import BuildConfig, build

    out = tmp_path_factory.mktemp("ds") / "friends16"
    build(BuildConfig.from_dict({"input": str(friends_dir / "train"), "output": str(out), "shards": 2,
                                 "test_samples": 4, "test_max_pairs": 40}), show_progress=False)
    return out


def h5_weights(path):
    import h5py

    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def max_diff(a, b):
    import numpy as np

    assert a.keys() == b.keys() and a
    return max(float(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max()) for k in a)


def runs_differ(a, b, name="backbone.weights.h5") -> float:
    """Largest weight difference between two runs' final/<name>."""
    return max_diff(h5_weights(Path(a) / "final" / name), h5_weights(Path(b) / "final" / name))


class KilledAfterCheckpoint(Exception):
    pass


@contextlib.contextmanager
def killed_after_checkpoint(step: int):
    """The training inside dies right after writing its checkpoint at ``step`` (an in-process kill at
    the worst moment for a resume); the block must reach it."""
    from recface_lib.train import trainer

    orig = trainer.TrainRun.checkpoint

    def die(self, s, si, seg):
        orig(self, s, si, seg)
        if s == step:
            raise KilledAfterCheckpoint(s)
    trainer.TrainRun.checkpoint = die
    try:
        with pytest.raises(KilledAfterCheckpoint):
            yield
    finally:
        trainer.TrainRun.checkpoint = orig
