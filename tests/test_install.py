"""Install profiles (issue 14): `recface[stack]` uses the TensorFlow and torch a machine already
has (Colab, a lab server) and never installs or replaces them; versions outside the supported
ranges fail `import recface_lib` with one line."""
from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from recface_lib import stack

FAKE = {"tensorflow": "2.19.0", "keras": "3.8.0", "torch": "2.6.0", "torchvision": "0.21.0"}  # a Colab-like GPU stack


def _colab_like_venv(root: Path) -> Path:
    """A venv that sees this environment's packages except its TensorFlow, Keras, torch and
    torchvision, which are replaced by (metadata-only) `tensorflow` (not tensorflow-cpu), keras,
    torch and torchvision distributions at other versions."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = root / "site"
    view.mkdir()
    hide = ("tensorflow_cpu-", "torch-", "torchvision-", "keras-", "recface", "__editable__")
    for e in site.iterdir():
        if not e.name.startswith(hide):
            (view / e.name).symlink_to(e)
    for name, ver in FAKE.items():
        d = view / f"{name}-{ver}.dist-info"
        d.mkdir()
        (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n")
        (d / "RECORD").write_text("")
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(root / "v")],
                   check=True)
    py = root / "v" / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "view.pth").write_text(f"{view}\n")
    return py


def _planned(py: Path, wheel: Path, extra: str, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(wheel.parent),
                           "--report", str(report), "-q", f"recface[{extra}]"], capture_output=True, text=True)


def test_stack_profile_installs_no_tensorflow_or_torch(tmp_path, recface_wheel):
    py = _colab_like_venv(tmp_path)
    p = _planned(py, recface_wheel, "stack", tmp_path / "stack.json")
    assert p.returncode == 0, p.stderr
    planned = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads((tmp_path / "stack.json").read_text())["install"]]
    assert planned == [("recface", "0.1.0")], planned  # nothing else: TensorFlow, keras, torch stay as they are
    # the pinned CPU profile, by contrast, would put tensorflow-cpu over that `tensorflow`
    p = _planned(py, recface_wheel, "tf", tmp_path / "tf.json")
    assert p.returncode == 1 and "tensorflow-cpu==2.21.0" in p.stderr


def test_the_supported_ranges_are_checked_at_import():
    assert stack.check({k: (k, v) for k, v in FAKE.items()})["tensorflow"] == ("tensorflow", "2.19.0")
    with pytest.raises(stack.StackError, match=r"^recface needs tensorflow >=2.16,<2.22; found tensorflow 2.12.0\."):
        stack.check({**{k: (k, v) for k, v in FAKE.items()}, "tensorflow": ("tensorflow", "2.12.0")})
    assert "\n" not in str(pytest.raises(stack.StackError, stack.check, {"torch": ("torch", "1.13.1")}).value)
    assert stack.check({"tensorflow": None}) == {}  # absent: fine until a stage needs it
    assert "pip install 'recface[tf]'" in stack.missing("tensorflow.python")
