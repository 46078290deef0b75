"""The plugin manager: pluggy, entry-point group ``introspect``.

``get_plugin_manager()`` loads every entry point of the group once. Plugins that fail to import or
to register are reported (``introspect plugins`` lists the errors; the CLI prints one line each on
stderr) and skipped: a broken plugin never takes the CLI down. ``check_pending()`` makes a misspelled
hook implementation fail at once. Set ``INTROSPECT_DISABLE_PLUGINS=1`` to load only the plugins that
ship with introspect itself. Nothing happens at import time.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

import pluggy

from introspect import hookspecs
from introspect.errors import IntrospectError

if TYPE_CHECKING:
    import click

GROUP = "introspect"
DISABLE_ENV = "INTROSPECT_DISABLE_PLUGINS"
BUNDLED_DISTRIBUTION = "introspect"


@dataclass
class PluginInfo:
    """One plugin as ``introspect plugins`` shows it."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    bundled: bool
    error: str | None = None
    registers: dict[str, list[str]] = field(default_factory=dict)
    inactive: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Method:
    """A registered analysis method. ``func`` is the function; a method registered by import path
    (``"introspect_occlusion.method:occlusion"``) is imported on first use of ``func``, so listing
    methods imports no plugin's heavy modules (torch)."""

    def __init__(self, name: str, func: Callable | str, description: str, plugin: str) -> None:
        self.name, self.description, self.plugin = name, description, plugin
        self._func = func

    @property
    def func(self) -> Callable:
        if isinstance(self._func, str):
            self._func = _import_path(self._func)
        return self._func

    def __repr__(self) -> str:
        return f"Method(name={self.name!r}, plugin={self.plugin!r}, description={self.description!r})"


def _import_path(path: str) -> Callable:
    """``"package.module:name"`` -> the object (a method's function registered by import path)."""
    import importlib

    module, _, attr = path.partition(":")
    found = getattr(importlib.import_module(module), attr)
    if not callable(found):
        raise TypeError(f"{path} is not callable")
    return found


class IntrospectPluginManager(pluggy.PluginManager):
    """A ``pluggy.PluginManager`` that also keeps what each plugin registered and its load errors."""

    def __init__(self):
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._methods: dict[str, Method] | None = None
        self._archs: dict | None = None
        self._archs_noted = False  # what each plugin registers is in self.infos

    def register(self, plugin, name=None):
        """Register a plugin (as pluggy does) and forget what was collected from the others."""
        self._methods = self._archs = None
        self._archs_noted = False
        return super().register(plugin, name=name)

    def unregister(self, plugin=None, name=None):
        self._methods = self._archs = None
        self._archs_noted = False
        return super().unregister(plugin, name=name)

    # -- loading ---------------------------------------------------------------------------------
    def load_entry_points(self, disable_third_party: bool = False) -> None:
        seen = set()
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            bundled = dist_name == BUNDLED_DISTRIBUTION
            info = PluginInfo(ep.name, ep.value, dist_name, dist.version if dist else None, bundled)
            self.infos[ep.name] = info
            if disable_third_party and not bundled:
                info.error = f"disabled by {DISABLE_ENV}"
                continue
            plugin = None
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
                self.check_pending()  # a misspelled hook of this plugin fails here, not silently
                reason = getattr(plugin, "inactive_reason", None)  # installed, but missing what it needs
                info.inactive = reason() if callable(reason) else reason
            except Exception as exc:  # a broken plugin is reported and skipped, never fatal
                info.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                if plugin is not None and self.is_registered(plugin):
                    self.unregister(plugin)

    def load_errors(self) -> list[str]:
        return [f"plugin {i.name!r} ({i.module}) was skipped: {i.error}" for i in self.infos.values()
                if i.error and not i.error.startswith("disabled")]

    def _note(self, plugin_name: str | None, kind: str, name: str) -> None:
        if plugin_name in self.infos:
            self.infos[plugin_name].registers.setdefault(kind, []).append(name)

    def _call_each(self, hook_name: str, make_register: Callable[[str], Callable]) -> None:
        """Call a register-callback hook plugin by plugin, so a failing plugin is skipped alone."""
        hook = getattr(self.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            try:
                impl.function(make_register(impl.plugin_name))
            except Exception as exc:
                info = self.infos.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, "", None, None, False))
                info.error = f"{hook_name} failed: {type(exc).__name__}: {exc}".splitlines()[0]

    # -- collected registrations ---------------------------------------------------------------
    def methods(self) -> dict[str, Method]:
        if self._methods is None:
            methods: dict[str, Method] = {}

            def make(plugin):
                def register(name, func, description=""):
                    if isinstance(func, str):  # "module:name", imported on first use
                        if not description or ":" not in func:
                            raise ValueError(f"method {name!r} registered by import path {func!r} needs "
                                             "the form 'module:name' and a description")
                    elif not callable(func):
                        raise TypeError(f"method {name!r} is not callable")
                    if name in methods:
                        raise ValueError(f"method {name!r} is already registered by {methods[name].plugin!r}")
                    if name in core_names():
                        raise ValueError(f"method {name!r} clashes with introspect.{name} of the core; "
                                         "rename the method")
                    if not description:
                        description = (func.__doc__ or "").strip().split("\n")[0]
                    methods[name] = Method(name, func, description, plugin)
                    self._note(plugin, "methods", name)
                return register

            self._call_each("register_methods", make)
            self._methods = methods
        return self._methods

    def architectures(self) -> dict:
        if self._archs is None:
            self._archs = self._collect_architectures(listing=False)
        return self._archs

    def note_architectures(self) -> None:
        """Note what each plugin registers (``introspect plugins``) without building the registry: the
        ``register`` callback has ``register.listing = True``, so a plugin may skip registrations that
        need heavy imports and add nothing to the listing (the built-in plugin's torchvision zoo)."""
        if self._archs is None and not self._archs_noted:
            self._collect_architectures(listing=True)

    def _collect_architectures(self, *, listing: bool) -> dict:
        from introspect.imagenet import IMAGENET_MEAN, IMAGENET_STD
        from introspect.models import ArchSpec

        archs: dict[str, ArchSpec] = {}
        noting = not self._archs_noted

        def make(plugin):
            def register(name, builder, description="", input_size=(3, 224, 224),
                         mean=IMAGENET_MEAN, std=IMAGENET_STD):
                if not callable(builder):
                    raise TypeError(f"architecture {name!r} has no callable builder")
                if name in archs:
                    raise ValueError(f"architecture {name!r} is already registered by {archs[name].plugin!r}")
                archs[name] = ArchSpec(
                    name, builder, description, tuple(input_size), tuple(mean), tuple(std), plugin
                )
                if noting and (plugin != "builtin_models" or name in ("zfnet", "alexnet", "alexnet_torchvision")):
                    self._note(plugin, "architectures", name)
            setattr(register, "listing", listing)  # noqa: B010  (an attribute of the callback)
            return register

        self._call_each("register_architectures", make)
        if noting and "builtin_models" in self.infos:
            self.infos["builtin_models"].registers.setdefault("architectures", []).append(
                "torchvision classification models"
            )
        self._archs_noted = True
        return archs

    def add_commands(self, cli: click.Group) -> None:
        before = set(cli.commands)

        def make(plugin):
            return cli

        hook = self.hook.register_commands
        for impl in reversed(hook.get_hookimpls()):
            try:
                impl.function(make(impl.plugin_name))
            except Exception as exc:
                info = self.infos.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, "", None, None, False))
                info.error = f"register_commands failed: {type(exc).__name__}: {exc}".splitlines()[0]
            for name in sorted(set(cli.commands) - before):
                self._note(impl.plugin_name, "commands", name)
            before = set(cli.commands)


_MANAGER: IntrospectPluginManager | None = None


def get_plugin_manager(*, reload: bool = False) -> IntrospectPluginManager:
    """The process-wide plugin manager, loading the entry points on first use."""
    global _MANAGER
    if _MANAGER is None or reload:
        pm = IntrospectPluginManager()
        pm.load_entry_points(disable_third_party=os.environ.get(DISABLE_ENV, "") not in ("", "0"))
        if not pm.is_registered(_builtin()):
            pm.register(_builtin(), name="builtin_models")
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise IntrospectError(
                f"a plugin implements an unknown hook: {exc}; fix the plugin or uninstall it"
            ) from None
        _MANAGER = pm
    return _MANAGER


def _builtin():
    from introspect.models import builtin

    return builtin


def methods() -> dict[str, Method]:
    """Every registered analysis method by name (``register_methods`` hook)."""
    return get_plugin_manager().methods()


def core_names() -> set[str]:
    """Names a method may not take: the public API of ``introspect`` and its submodules
    (``introspect.<name>`` would be shadowed by them)."""
    import pkgutil

    import introspect

    return set(introspect.__all__) | {m.name for m in pkgutil.iter_modules(introspect.__path__)}


def require_method(name: str, needed_by: str) -> Callable:
    """The function of registered method ``name``; a one-line :class:`IntrospectError` naming
    ``needed_by`` when no plugin registers it (the way a plugin declares it uses another's method)."""
    found = methods().get(name)
    if found is None:
        raise IntrospectError(f"{needed_by} needs the method {name!r}, which no loaded plugin registers; "
                              "install or enable the plugin that provides it (`introspect plugins` lists them)")
    return found.func


__all__ = ["GROUP", "DISABLE_ENV", "PluginInfo", "Method", "IntrospectPluginManager", "get_plugin_manager",
           "methods", "require_method", "core_names"]
