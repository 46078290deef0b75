"""Names of a package loaded on first use, so that listing commands and building the help never import
torch (start-up time). A plugin's package or ``introspect.models`` calls :func:`lazy_exports` with the
names its ``__init__`` would otherwise import eagerly.
"""
from __future__ import annotations

import importlib
import sys
import types


class _LazyPackage(types.ModuleType):
    """A package whose listed names are imported from their modules on first use. A name that is also
    the name of a submodule (``introspect.core.attach``, the function in ``attach.py``) keeps
    meaning the function: the import system's binding of the submodule onto the package is ignored.
    ``dir()`` does not list the names before they are used (pluggy reads every attribute ``dir()``
    lists when it registers a plugin)."""

    _lazy_names: dict[str, str]

    def __getattr__(self, name: str):
        source = self.__dict__.get("_lazy_names", {}).get(name)
        if source is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        types.ModuleType.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value) -> None:
        lazy = self.__dict__.get("_lazy_names", {})
        submodule = isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}"
        if name in lazy and submodule:
            return  # a submodule of the same name as the exported function: the function wins
        super().__setattr__(name, value)


def lazy_exports(package: str, names: dict[str, str]) -> None:
    """Make ``names`` (name -> the module that defines it) attributes of ``package``, imported from
    their modules on first use. Call it at the end of the package's ``__init__``::

        lazy_exports(__name__, {"occlusion": "introspect_occlusion.method"})
    """
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module.__dict__.setdefault("_lazy_names", {}).update(names)


def lazy_function(module: str, name: str, doc: str = ""):
    """A stand-in for the function ``module.name`` that imports it when called (a builder registered
    without importing torch)."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__module__ = module
    call.__doc__ = doc
    return call


__all__ = ["lazy_exports", "lazy_function"]
