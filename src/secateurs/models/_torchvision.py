"""torchvision's classification models on a CPU-only torch whose torchvision ops do not load.

The PyPI torchvision wheel ships compiled detection ops (``nms``, ``roi_align``, ...) linked
against CUDA. On the CPU build of torch that library does not load, and ``import
torchvision`` then fails inside ``torchvision._meta_registrations``, which registers fake
kernels for those very ops. The classification models use none of them, so
:func:`import_torchvision` skips the two registration modules (and only them) when the
plain import fails; a detection op called afterwards still fails with torchvision's own
error, nothing is faked.
"""

from __future__ import annotations

import importlib
import sys
import types

#: torchvision modules that register the compiled ops' kernels at import time.
_OP_REGISTRATIONS = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def import_torchvision() -> types.ModuleType:
    """``torchvision.models``, importing torchvision without its compiled ops if need be.

    Raises:
        ImportError: torchvision is not installed, or fails for another reason.
    """
    try:
        return importlib.import_module("torchvision.models")
    except ImportError:
        raise
    except RuntimeError as e:  # "operator torchvision::nms does not exist"
        if "torchvision::" not in str(e):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so that it imports afresh
    for name in _OP_REGISTRATIONS:
        sys.modules[name] = types.ModuleType(name)
    try:
        return importlib.import_module("torchvision.models")
    except Exception as e:
        raise ImportError(f"torchvision does not import even without its compiled ops: {type(e).__name__}: {e}") from e
