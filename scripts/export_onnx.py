"""Export the shipped phnet-grid weights to ONNX for the torch-free CPU path
(:mod:`vidharm.models.onnx_grid`): ``vidharm/weights/phnet-grid.onnx`` (the grid and the
global features) and, for a model with a joint head, ``phnet-grid-joint.onnx``.

    .venv/bin/pip install onnx            # needed here only, never at run time
    .venv/bin/python scripts/export_onnx.py

Run it whenever ``phnet-grid.safetensors`` changes; ``tests/test_grid_harmonizers.py`` fails
while the two disagree. The graph is the model's ``predict_grid`` at its own input size
(64x64, already averaged down from the working size), so it holds no resizing; OpenCV's DNN
module reads it. The script checks OpenCV's results against torch's before it writes.
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
    from vidharm.models.onnx_grid import (JOINT_SUFFIX, ONNX_FILES, input_names,
                                          joint_input_names, output_names)
    from vidharm.models.weights import load_weights

    model = load_weights(shipped_weights("phnet-grid")).eval()
    size = int(model.config["in_size"])

    class Method(torch.nn.Module):
        """One of the model's methods as a module's forward, for the exporter."""

        def __init__(self, net, name):
            super().__init__()
            self.net, self.name = net, name

        def forward(self, *args):
            return getattr(self.net, self.name)(*args)

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4:, size // 4: 3 * size // 4] = 1.0
    out = WEIGHTS_DIR / ONNX_FILES["phnet-grid"]
    joint_out = out.with_name(out.name.removesuffix(".onnx") + JOINT_SUFFIX)
    with torch.inference_mode():
        want_grid, feats = model.predict_with_features(image, mask)
        # a second frame's features: the same image with the person darkened
        feats_s = model.predict_with_features(image * (1 - 0.4 * mask), mask)[1]
        want_delta = model.joint_delta(feats, feats_s) if model.joint is not None else None
    with atomic_path(out) as tmp:
        torch.onnx.export(Method(model, "predict_with_features"), (image, mask), str(tmp),
                          dynamo=False, opset_version=13, input_names=list(input_names),
                          output_names=list(output_names))
        net = cv2.dnn.readNetFromONNX(str(tmp))
        net.setInput(image.numpy(), input_names[0])
        net.setInput(mask.numpy(), input_names[1])
        got_grid, got_feats = net.forward(list(output_names))
        err = max(float(np.abs(got_grid.reshape(want_grid.shape) - want_grid.numpy()).max()),
                  float(np.abs(got_feats.reshape(feats.shape) - feats.numpy()).max()))
        if err > 1e-4:               # raised inside the block: the file is not written
            raise SystemExit(f"OpenCV's result differs from torch's by {err:.2e}: not written")
    os.chmod(out, 0o644)                 # package data: readable by everyone
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB); OpenCV vs torch: {err:.1e}")
    if want_delta is None:
        joint_out.unlink(missing_ok=True)   # a model without a joint head: none shipped
        return 0
    with atomic_path(joint_out) as tmp:
        torch.onnx.export(Method(model, "joint_delta"), (feats, feats_s), str(tmp),
                          dynamo=False, opset_version=13, input_names=list(joint_input_names),
                          output_names=["delta"])
        net = cv2.dnn.readNetFromONNX(str(tmp))
        net.setInput(feats.numpy(), joint_input_names[0])
        net.setInput(feats_s.numpy(), joint_input_names[1])
        got = net.forward()
        err = float(np.abs(got.reshape(want_delta.shape) - want_delta.numpy()).max())
        if err > 1e-5:
            raise SystemExit(f"OpenCV's joint head differs from torch's by {err:.2e}: not written")
    os.chmod(joint_out, 0o644)
    print(f"wrote {joint_out} ({os.path.getsize(joint_out) / 1e6:.2f} MB); OpenCV vs torch: {err:.1e}")
    return 0


if __name__ == "__main__":
    import argparse
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.exit(main())
