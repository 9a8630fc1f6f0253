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


def _share_the_cores() -> None:
    """In a pytest-xdist worker: this worker's share of the cores as every library's thread count
    (TensorFlow, torch/OpenMP, BLAS, OpenCV), set before any of them is imported and inherited by
    the CLI subprocesses the tests start, so that the workers do not oversubscribe the machine."""
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not count:
        return
    threads = max(1, (os.cpu_count() or 1) // int(count))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "OPENCV_FOR_THREADS_NUM", "RECFACE_CORES"):  # RECFACE_CORES: what `workers: 0` means
        os.environ[var] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(max(2, threads))  # collectives need >= 2 (MirroredStrategy)


_share_the_cores()


# Session fixtures that build something heavy (a trained model, a teacher pass): the tests that use
# one run on one xdist worker (README "Tests"), so that it is built once and no worker waits for it.
HEAVY_SESSION_FIXTURES = ("trained", "distill_data", "distilled")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its hook renames the items)
def pytest_collection_modifyitems(config, items):
    """Give every test an ``xdist_group``: tests joined by a heavy session fixture or by a
    module-scoped fixture of their file are one group (transitively), so ``--dist loadgroup`` sends
    each group to one worker and nothing heavy is built twice. Tests marked ``serial`` get none
    (they run alone after the parallel phase). RECFACE_TEST_SHUFFLE=SEED shuffles the tests: a
    test that passes only after another one (or only alone) shows up."""
    parent: dict = {}

    def find(k):
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        for name in getattr(item, "fixturenames", ()):
            defs = info.name2fixturedefs.get(name) if info else None
            if name in HEAVY_SESSION_FIXTURES:
                parent[find(("session", name))] = find(("item", item.nodeid))
            elif defs and defs[-1].scope == "module":
                parent[find(("module", item.module.__name__, name))] = find(("item", item.nodeid))
    members: dict = {}
    for item in items:
        members.setdefault(find(("item", item.nodeid)), []).append(item)
    for group in members.values():
        if len(group) < 2:
            continue
        name = "+".join(sorted({i.module.__name__ for i in group}))
        for item in group:
            if item.get_closest_marker("serial") is None:
                item.add_marker(pytest.mark.xdist_group(name))
    seed = os.environ.get("RECFACE_TEST_SHUFFLE")
    if seed:  # an order check: the same seed gives every xdist worker the same order
        import random

        random.Random(int(seed)).shuffle(items)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """The groups must reach xdist's scheduler (it reads them from the node ids): a pytest that
    drops them (pytest 9.2 with xdist 3.8, pytest-dev/pytest-xdist#1386) would quietly build every
    heavy fixture on every worker, so the run stops instead."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and session.config.getvalue("dist") == "loadgroup"):
        return
    lost = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(f"xdist_group marks do not reach the loadgroup scheduler ({lost[0]} and "
                                f"{len(lost) - 1} more): use the pytest pinned in pyproject.toml")


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


def photos_outside_fold10(lfw_dir: Path, dest: Path, people: slice, per_person: int = 2) -> list[str]:
    """Symlinks (the photos stay in ../shared/data) in ``dest/<person>/`` to ``per_person`` photos of
    each of the LFW people ``people`` (a slice of those, in name order, who are outside fold 10 and
    have that many photos); their names."""
    from recface_lib.data.lfw_pairs import read_pairs

    photos = lfw_dir / "lfw-deepfunneled"
    fold10 = set()
    for q in read_pairs(lfw_dir / "pairs.txt", photos):
        if q.fold == 10:
            fold10 |= {Path(q.path1).parent.name, Path(q.path2).parent.name}
    chosen = [p for p in sorted(photos.iterdir())
              if p.name not in fold10 and len(list(p.glob("*.jpg"))) >= per_person][people]
    for p in chosen:
        (dest / p.name).mkdir(parents=True)
        for f in sorted(p.glob("*.jpg"))[:per_person]:
            (dest / p.name / f.name).symlink_to(f)
    return [p.name for p in chosen]


def run_cli(*args: str, check: bool = True, cwd=None, subprocess_: bool = False) -> subprocess.CompletedProcess:
    """Run ``recface ARGS`` and return its exit status, stdout and stderr.

    By default in this process, through ``cli.main`` exactly as the entry point calls it (the same
    parser, stage runner, error contract and JSON line), with stdout and stderr captured: a new
    process would spend most of its time importing TensorFlow again (11 s of CPU each, for 60-odd
    calls). ``subprocess_=True`` (or RECFACE_TEST_SUBPROCESS=1 for every call) starts the installed
    entry point instead; the tests of the entry point itself (test_cli_and_imports, test_install,
    test_notebooks) always do."""
    if subprocess_ or os.environ.get("RECFACE_TEST_SUBPROCESS") == "1":
        exe = Path(sys.executable).with_name("recface")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "recface_lib.cli"]
        proc = subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd,
                              env={**os.environ, "RECFACE_NO_PROGRESS": "1"})
    else:
        proc = _run_cli_here(list(args), cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"recface {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _run_cli_here(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """``recface ARGV`` through ``cli.main`` in this process, as the console script runs it: an
    uncaught exception is exit status 1 with its traceback on stderr, SystemExit its code."""
    import io
    import traceback

    from recface_lib import cli

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_env = os.getcwd(), os.environ.get("RECFACE_NO_PROGRESS")
    os.environ["RECFACE_NO_PROGRESS"] = "1"
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # noqa: BLE001 - what the console script would do: traceback, status 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(old_cwd)
        if old_env is None:
            os.environ.pop("RECFACE_NO_PROGRESS", None)
        else:
            os.environ["RECFACE_NO_PROGRESS"] = old_env
    return subprocess.CompletedProcess(["recface", *argv], code, out.getvalue(), err.getvalue())


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


def shared_once(tmp_path_factory, name: str, make) -> dict:
    """``make(folder) -> dict`` done once per test run for every xdist worker, under a file lock,
    in a folder all workers see (the run's temporary root); the others read its result. The dict
    must be JSON (paths as strings); ``"root"`` is added, the folder. Tests read what is in the
    folder and copy what they change. A ``make`` that failed leaves no result: the next caller starts it again from an empty folder."""
    import json
    import shutil

    from filelock import FileLock

    from recface_lib.io_utils import atomic_write_json

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"shared-{name}"
    done = root.with_name(root.name + ".json")
    with FileLock(str(root) + ".lock"):
        if done.is_file():
            return json.loads(done.read_text())
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        value = {**make(root), "root": str(root)}
        atomic_write_json(done, value)
        return value


@pytest.fixture(scope="session")
def trained(friends_dir, tmp_path_factory):
    """The one tiny trained model of the suite (README "Tests"), for every test that needs a model
    trained here (export, inference, evaluate, IJB, gallery): friends16 aligned with MTCNN at 64 px,
    built, TestMobileFaceNet (MobileFaceNetV2's layer kinds at 62K parameters: every export format
    converts the same operations) trained 160 steps (deterministic), a classifier fitted with it
    (6 photos per person and split), exported in every format. Built once per test run (``shared_once``); tests read it and
    copy what they change."""
    def make(root: Path) -> dict:
        run_cli("align", "--input", str(friends_dir / "train"), "--output", str(root / "aligned"), "--size", "64",
                "--json")
        run_cli("build", "--input", str(root / "aligned"), "--output", str(root / "ds"), "--shards", "2", "--json")
        run_cli("train", "--dataset", str(root / "ds"), "--output", str(root / "run"), "--set", "input_size=64",
                "--set", "batch_size=32", "--set", "steps_per_epoch=10", "--set", "plan=[[12, 0.1], [4, 0.01]]",
                "--set", "backbone=TestMobileFaceNet",
                "--set", "scale=32", "--set", "margin=0.3", "--set", "embd_shape=128", "--set", "tensorboard=false",
                "--set", "deterministic=true", "--json")
        clf = last_json(run_cli("classify", "--known", str(friends_dir), "--embedder", str(root / "run"),
                                "--output", str(root / "clf"), "--no-compare", "--limit", "6", "--json"))
        exp = last_json(run_cli("export", "--run", str(root / "run"), "--output", str(root / "friends.zip"),
                                "--check-images", str(root / "aligned" / "Andre_Agassi"), "--classifier",
                                str(root / "clf" / "classifier"), "--json"))
        return {"export": exp, "classify": clf}

    done = shared_once(tmp_path_factory, "trained", make)
    root = Path(done["root"])
    return {"root": root, "bundle": root / "friends.zip", "export": done["export"], "classify": done["classify"]}


@pytest.fixture(scope="session")
def fold10(lfw_dir, tmp_path_factory):
    """LFW fold 10, all 600 pairs (300 same, 300 different), as a .bin of the original photos, and
    each of its 785 distinct images aligned once by the align stage's MTCNN at 48 px (landmarks on
    the ArcFace template; the whole image where no face is found), as a .bin of PNG crops with every
    image's status. test_align reads the detection rate, the distillation tests score their 48-px
    models on the crops. Built once per test run for all workers (``shared_once``)."""
    def make(root: Path) -> dict:
        from recface_lib.align.config import AlignConfig
        from recface_lib.align.pipeline import Aligner
        from recface_lib.data.lfw_pairs import read_pairs
        from recface_lib.data.verification_bin import write_bin
        from recface_lib.io_utils import encode_image, load_item
        from recface_lib.protocol.pair_sets import distinct_items

        qs = [q for q in read_pairs(lfw_dir / "pairs.txt", lfw_dir / "lfw-deepfunneled") if q.fold == 10]
        stored = [Path(p).read_bytes() for q in qs for p in (q.path1, q.path2)]
        write_bin(root / "fold10.bin", stored, [q.same for q in qs])
        images, index, _ = distinct_items(stored)
        cfg = AlignConfig(size=48, on_failure="keep")
        aligner = Aligner(**cfg.to_dict())
        crops, status = [], []
        for s in range(0, len(images), 16):  # MTCNN batches same-size images
            for crop, how, _ in aligner.align_images([load_item(b) for b in images[s:s + 16]]):
                crops.append(encode_image(crop, ".png"))
                status.append(how)
        write_bin(root / "fold10_aligned.bin", [crops[i] for i in index], [q.same for q in qs])
        return {"bin": str(root / "fold10.bin"), "aligned": str(root / "fold10_aligned.bin"),
                "contract": cfg.contract(), "status": status}

    return shared_once(tmp_path_factory, "fold10", make)


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
