"""recface: a notebook-centric workbench for training and testing face-recognition models.

Importing the package blocks the optional ``triton`` module (torch's GPU kernel compiler, unused
here): with triton installed, importing torchvision after tensorflow segfaults the process (triton's
LLVM clashes with TensorFlow's). With triton blocked, torch, torchvision, facenet-pytorch and
tensorflow import in any order. Set ``RECFACE_ALLOW_TRITON=1`` to keep triton importable.

It also checks that an installed TensorFlow, Keras, torch or torchvision lies in the supported
range (``stack.py``; metadata only, nothing imported): else one line names found and needed.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

if _os.environ.get("RECFACE_ALLOW_TRITON") != "1" and "triton" not in _sys.modules:
    _sys.modules["triton"] = None  # `import triton` now raises ImportError; torch treats it as absent

from .stack import check as _check_stack  # noqa: E402

_check_stack()
