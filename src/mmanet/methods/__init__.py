"""Training recipes, one registered :class:`Method` each (docs/design.md §2 ``methods/``).

``METHODS`` maps a method name (``sf``, ``sf_md``, ``hemis`` … ``mmanet``, ``sp``, ``mad``, ``sr``,
``kd``, ``mmanet_kd``, ``cmad``, ``passion``, ``teacher``, ``esanet``, ``esanet_md``) to its class and
configuration preset.
A new method is one new module here that registers its class (:func:`register_method`), imported below.
"""

from mmanet.methods import cmad, mmanet, passion, supervised  # noqa: F401  (register the methods)
from mmanet.methods.base import (
    METHODS,
    Method,
    MethodEntry,
    RunPlan,
    StepContext,
    TaskLoss,
    build_method,
    method_entry,
    register_method,
)

__all__ = [
    "METHODS",
    "Method",
    "MethodEntry",
    "RunPlan",
    "StepContext",
    "TaskLoss",
    "build_method",
    "method_entry",
    "method_presets",
    "register_method",
]


def method_presets() -> dict[str, dict]:
    """Every method name → the run-configuration preset it stands for."""
    return {name: METHODS.get(name).preset for name in METHODS}
