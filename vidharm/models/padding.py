"""Any-size inputs for the encoder-decoders: checked, padded to the network's multiple, cropped."""
from __future__ import annotations

import torch.nn.functional as Fn
from torch import Tensor


class PaddedForward:
    """Mixin: ``forward(image, mask)`` for any H, W.

    The class provides ``forward_padded(image, mask)`` (sides multiples of ``pad_multiple`` and
    at least ``min_size``). Other sizes are padded at the bottom/right by edge replication and
    the output is cropped back; sizes that already fit take ``forward_padded`` unchanged
    (bit-identical to the published path).
    """

    pad_multiple: int
    min_size: int

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B,3,H,W), got {tuple(image.shape)}")
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:] \
                or mask.shape[0] != image.shape[0]:
            raise ValueError(f"mask must be (B,1,H,W) matching the image {tuple(image.shape)}, "
                             f"got {tuple(mask.shape)}")
        mask = mask.to(image.dtype)
        H, W = image.shape[-2:]
        ph, pw = self._padded_size(H) - H, self._padded_size(W) - W
        if ph == 0 and pw == 0:
            return self.forward_padded(image, mask)
        pad = (0, pw, 0, ph)
        out = self.forward_padded(Fn.pad(image, pad, mode="replicate"),
                                  Fn.pad(mask, pad, mode="replicate"))
        return out[..., :H, :W]

    def _padded_size(self, n: int) -> int:
        return max(self.min_size, -(-n // self.pad_multiple) * self.pad_multiple)
