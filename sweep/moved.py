"""Module paths from before `sweep/` was split into packages by role, kept importable for old saved state.

Tune pickles the searcher, the callbacks and the stopper of a sweep by module path into its saved state
(`tuner.pkl`, the searcher's state); `sweep resume` of a sweep saved by an older version unpickles them
under those paths. Each old path is an alias whose attributes are read from the module that now holds them,
so the unpickled objects are instances of today's classes (and are saved under today's paths from then on).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "sweep.search": "sweep.orchestration.search",
    "sweep.live": "sweep.orchestration.live",
    "sweep.rejection": "sweep.orchestration.rejection",
    "sweep.launch_gate": "sweep.orchestration.launch_gate",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        target = importlib.import_module(MOVED[module.__name__])
        module.__getattr__ = lambda name: getattr(target, name)


def install() -> None:
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
