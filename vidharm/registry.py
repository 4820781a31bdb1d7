"""Named registries for pluggable parts: sources, segmenters, sinks, harmonizers.

Built-ins register themselves when :func:`ensure_plugins_loaded` imports ``vidharm.harmonize``
and ``vidharm_plugins`` (the ``plugins/`` folder). Third parties register through the Python entry-point group
``vidharm.plugins``: each entry point names a callable ``register(registry)`` (or a module
whose import registers things). Example, in a third party's ``pyproject.toml``::

    [project.entry-points."vidharm.plugins"]
    sepia = "vidharm_sepia:register"

and ``vidharm_sepia.register(reg)`` calls ``reg.sinks.add("sepia", SepiaSink)``.
"""
from __future__ import annotations

import difflib
import importlib
import logging
import threading
from importlib import metadata
from typing import Any, Callable, Dict, Generic, Iterator, TypeVar

from .errors import ConfigError

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "vidharm.plugins"
T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory mapping for one kind of plugin."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Callable[..., T]] = {}
        self._help: Dict[str, str] = {}

    def add(self, name: str, factory: Callable[..., T], help: str = "") -> Callable[..., T]:
        if name in self._items and self._items[name] is not factory:
            log.warning("%s %r registered twice; the later one wins", self.kind, name)
        self._items[name] = factory
        doc = (factory.__doc__ or "").strip().splitlines()
        self._help[name] = help or (doc[0] if doc else "")
        return factory

    def register(self, name: str, help: str = ""):
        """Decorator form of :meth:`add`."""
        def deco(factory):
            return self.add(name, factory, help)
        return deco

    def get(self, name: str) -> Callable[..., T]:
        ensure_plugins_loaded()
        try:
            return self._items[name]
        except KeyError:
            known = sorted(self._items)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"unknown {self.kind} '{name}'",
                f"{hint}known {self.kind}s: {', '.join(known) or 'none'}; "
                f"third-party {self.kind}s must be installed and registered under the "
                f"'{ENTRY_POINT_GROUP}' entry-point group") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        ensure_plugins_loaded()
        return sorted(self._items)

    def describe(self) -> Iterator[tuple[str, str]]:
        for n in self.names():
            yield n, self._help.get(n, "")

    def __contains__(self, name: str) -> bool:
        ensure_plugins_loaded()
        return name in self._items


class PluginRegistry:
    """All registries together; this is what a plugin's ``register(reg)`` receives."""

    def __init__(self):
        self.sources: Registry = Registry("source")
        self.segmenters: Registry = Registry("segmenter")
        self.sinks: Registry = Registry("sink")
        self.harmonizers: Registry = Registry("harmonizer")


registry = PluginRegistry()
_loaded = False
_lock = threading.RLock()
plugin_errors: list[str] = []


def ensure_plugins_loaded() -> None:
    """Import built-in plugins and third-party entry points (once)."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True
        importlib.import_module("vidharm.harmonize")  # built-in harmonizers
        importlib.import_module("vidharm_plugins")     # built-in sources/segmenters/sinks
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                if callable(obj):
                    obj(registry)
            except Exception as exc:  # a broken plugin must not break vidharm
                msg = f"plugin '{ep.name}' ({ep.value}) failed to load: {exc}"
                plugin_errors.append(msg)
                log.warning(msg)


