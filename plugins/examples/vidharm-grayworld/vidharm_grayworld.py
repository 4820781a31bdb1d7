"""An example third-party vidharm plugin, packaged on its own (see pyproject.toml).

It adds a ``grayworld`` harmonizer: the person's per-channel colour balance is shifted so its
channel ratios match the background's (grey-world assumption), brightness kept. It returns an
image; vidharm fits its colour grid to it and applies that at full resolution, at the
``--strength`` asked for. vidharm finds
it through the ``vidharm.plugins`` entry-point group; nothing in vidharm is edited::

    pip install ./plugins/examples/vidharm-grayworld
    vidharm transcode in.mp4 -o out.mp4 --background beach.jpg --harmonizer grayworld
"""
import numpy as np

from vidharm.harmonize import BaseHarmonizer


class GrayWorldHarmonizer(BaseHarmonizer):
    """Grey-world colour balance of the person toward the background (example plugin)."""

    name = "grayworld"

    def __init__(self, cfg=None):
        self.cfg = cfg

    def harmonize(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        img = composite.astype(np.float32)
        m = mask[..., None]
        fg_mean = (img * m).sum((0, 1)) / max(float(m.sum()), 1.0)
        bg_mean = (img * (1 - m)).sum((0, 1)) / max(float((1 - m).sum()), 1.0)
        # same brightness, background's channel ratios
        target = bg_mean / max(bg_mean.mean(), 1e-3) * fg_mean.mean()
        gain = target / np.maximum(fg_mean, 1e-3)
        out = img + m * (img * gain - img)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def register(registry):
    registry.harmonizers.add("grayworld", GrayWorldHarmonizer)
