"""Export the shipped phnet-grid weights to ONNX for the torch-free CPU path
(:mod:`vidharm.models.onnx_grid`): ``vidharm/weights/phnet-grid.onnx``.

    .venv/bin/pip install onnx            # needed here only, never at run time
    .venv/bin/python scripts/export_onnx.py

Run it whenever ``phnet-grid.safetensors`` changes; ``tests/test_grid_harmonizers.py`` fails
while the two disagree. The graph is the model's ``predict_grid`` at its own input size
(64x64, already averaged down from the working size), so it holds no resizing; OpenCV's DNN
module reads it. The script checks OpenCV's result against torch's before it writes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import cv2
    import torch

    from vidharm._fs import atomic_path
    from vidharm.models import WEIGHTS_DIR, shipped_weights
    from vidharm.models.onnx_grid import ONNX_FILES, input_names
    from vidharm.models.weights import load_weights

    model = load_weights(shipped_weights("phnet-grid")).eval()
    size = int(model.config["in_size"])

    class PredictGrid(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image, mask):
            return self.net.predict_grid(image, mask)

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4:, size // 4: 3 * size // 4] = 1.0
    out = WEIGHTS_DIR / ONNX_FILES["phnet-grid"]
    with atomic_path(out) as tmp:
        torch.onnx.export(PredictGrid(model), (image, mask), str(tmp), dynamo=False,
                          opset_version=13, input_names=list(input_names),
                          output_names=["grid"])
        net = cv2.dnn.readNetFromONNX(str(tmp))
        net.setInput(image.numpy(), input_names[0])
        net.setInput(mask.numpy(), input_names[1])
        got = net.forward()
        with torch.inference_mode():
            want = model.predict_grid(image, mask).numpy()
        err = float(np.abs(got.reshape(want.shape) - want).max())
        if err > 1e-4:               # raised inside the block: the file is not written
            raise SystemExit(f"OpenCV's result differs from torch's by {err:.2e}: not written")
    os.chmod(out, 0o644)                 # package data: readable by everyone
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB); OpenCV vs torch: {err:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
