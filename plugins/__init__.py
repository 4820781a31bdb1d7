"""Built-in adapters to the outside world (imported as ``vidharm_plugins``).

Importing this package registers the built-in sources, segmenters and sinks by name.
Third-party plugins use the ``vidharm.plugins`` entry-point group instead (see
``plugins/examples/``).
"""
from . import segmenters, sinks, sources  # noqa: F401  (registration side effects)
