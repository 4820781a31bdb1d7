"""vidharm: real-time video portrait harmonization.

Import-light: nothing here loads torch, MediaPipe or a camera until used.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "Harmonizer", "VidharmError"]

from .errors import VidharmError  # noqa: E402


def __getattr__(name):  # lazy: `vidharm.Harmonizer` imports torch only when asked for
    if name == "Harmonizer":
        from .api import Harmonizer
        return Harmonizer
    raise AttributeError(name)
