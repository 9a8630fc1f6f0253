import os
import subprocess
import sys

import pytest

from conftest import REPO, run_cli


def _verbs():
    from recface_lib.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    return list(sub.choices)


def test_help_for_every_verb():
    top = run_cli("--help", subprocess_=True).stdout  # the installed entry point
    verbs = _verbs()
    assert {"convert", "align", "build", "train", "evaluate", "verify", "classify", "export", "identify",
            "pipeline"} <= set(verbs)
    for name in verbs:
        assert name in top
        h = run_cli(name, "--help").stdout
        assert "--json" in h and "usage: recface " + name in h


def test_unknown_verb_fails_cleanly():
    proc = run_cli("nonsense", check=False, subprocess_=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.parametrize("order", [
    "import recface_lib; import tensorflow; import torchvision; import facenet_pytorch",
    "import recface_lib; import torch, torchvision; import tensorflow",
    "import recface_lib, tensorflow, dlib, torchvision",
])
def test_torch_tensorflow_import_orders(order):
    """Importing torchvision after tensorflow segfaults (exit 139) when triton is importable;
    recface_lib must make every order safe. Each order runs in its own process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", order + "; print('imported')"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, f"{order!r} exited {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "imported" in proc.stdout


def test_crash_control_without_guard():
    """Control: with the guard switched off the crash is real, so the test above can fail."""
    import importlib.metadata
    try:
        importlib.metadata.distribution("triton")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("triton not installed: the crash cannot happen")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RECFACE_ALLOW_TRITON": "1"}
    proc = subprocess.run([sys.executable, "-c", "import recface_lib; import tensorflow; import torchvision"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == -11 or proc.returncode == 139
