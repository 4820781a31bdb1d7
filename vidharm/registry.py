"""Named registries for pluggable parts: sources, segmenters, sinks, harmonizers.

Every part comes in through the Python entry-point group ``vidharm.plugins``, vidharm's own
too (its ``pyproject.toml`` declares the built-in harmonizers and the ``plugins/`` folder,
``vidharm_plugins``). An entry point names a callable ``register(reg)``, which receives the
:class:`PluginRegistry`, or a module whose import registers things. vidharm's own are loaded
first, so a third party's part of the same name replaces a built-in one (with a warning).
Example, in a third party's ``pyproject.toml``::

    [project.entry-points."vidharm.plugins"]
    sepia = "vidharm_sepia:register"

and ``vidharm_sepia.register(reg)`` calls ``reg.sinks.add("sepia", SepiaSink)``.

Entry points exist once the package is installed (``pip install -e .`` in a source checkout;
``scripts/setup.sh`` does it); a stale install may lack new ones. This module imports no part
of vidharm but :mod:`vidharm.errors`.
"""
from __future__ import annotations

import difflib
import logging
import threading
from importlib import metadata
from types import ModuleType
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

    def get(self, name: str) -> Callable[..., T]:
        ensure_plugins_loaded()
        try:
            return self._items[name]
        except KeyError:
            known = sorted(self._items)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            if not known:
                hint = (f"no {self.kind} is registered at all: install vidharm so that its "
                        "entry points exist (pip install -e .); ")
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
    """Load every entry point of the ``vidharm.plugins`` group (once), vidharm's own first."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: not _ours(ep))
        for ep in eps:
            try:
                obj = ep.load()
                if not isinstance(obj, ModuleType):     # a module registered on import
                    obj(registry)
            except Exception as exc:  # a broken plugin must not break vidharm
                msg = f"plugin '{ep.name}' ({ep.value}) failed to load: {exc}"
                plugin_errors.append(msg)
                log.warning(msg)


def _ours(ep: metadata.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and (dist.metadata["Name"] or "").lower() == "vidharm"
