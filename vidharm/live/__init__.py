"""Live: ``vidharm run``'s engine (:mod:`.engine`), its harmonizer thread (:mod:`.worker`),
commands and the control file (:mod:`.control`) and the no-camera picture
(:mod:`.placeholder`). The per-frame work is :mod:`vidharm.graph`'s, the smoothing
:mod:`vidharm.temporal`'s."""
from .control import ControlFile
from .engine import LiveEngine, backgrounds_in
from .worker import HarmonizerWorker, Mailbox

__all__ = ["LiveEngine", "HarmonizerWorker", "Mailbox", "ControlFile", "backgrounds_in"]
