"""PHNet's published training loss.

    Loss = 0.2 * L_PSNR + 0.01 * L_FN-MSE + 0.01 * L_grad

computed on the model's UNblended prediction (the whole frame), with images in [0, 1]:

* ``L_PSNR = 100 / (PSNR(pred, real, max=1) + 1e-7)``; PSNR = 10*log10(1 / MSE), the MSE taken
  over the whole batch (all samples, channels and pixels) -- one number per batch.
* ``FN-MSE = sum((pred - real)^2) / (C * max(sum(mask), 100))`` per sample (sums over channels
  and pixels, the mask summed over its single channel), then the batch mean.
* ``L_grad`` = L1 distance between the forward differences of ``pred*mask`` and ``real*mask``,
  the mean over x and the mean over y, averaged.

Everything is computed in float32 (also under autocast).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

W_PSNR = 0.2
W_FNMSE = 0.01
W_GRAD = 0.01
#: MSE floor inside the PSNR term: an exact match would otherwise give PSNR = inf (loss 0 but
#: NaN gradients). 1e-20 caps the PSNR at 200 dB (L_PSNR >= 0.5), far above any real value.
MSE_FLOOR = 1e-20


def psnr_batch(pred: torch.Tensor, real: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """PSNR in dB of the whole batch (one MSE over everything)."""
    mse = (pred.float() - real.float()).pow(2).mean().clamp_min(MSE_FLOOR)
    return 10.0 * torch.log10(max_val ** 2 / mse)


def psnr_loss(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L_PSNR = 100 / (PSNR(pred, real, max=1) + 1e-7)."""
    return 100.0 / (psnr_batch(pred, real, 1.0) + 1e-7)


def fn_mse(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor, min_area: float = 100.0) -> torch.Tensor:
    """Foreground-normalised MSE: Σ(pred-real)² / (C·max(Σmask, 100)) per sample, batch mean."""
    pred, real, mask = pred.float(), real.float(), mask.float()
    c = pred.shape[1]
    err = (pred - real).pow(2).flatten(1).sum(1)
    area = mask.flatten(1).sum(1).clamp_min(min_area)
    return (err / (c * area)).mean()


def grad_loss(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 of forward differences of pred·mask vs real·mask, x and y averaged."""
    p = pred.float() * mask.float()
    r = real.float() * mask.float()
    dx = ((p[..., :, 1:] - p[..., :, :-1]) - (r[..., :, 1:] - r[..., :, :-1])).abs().mean()
    dy = ((p[..., 1:, :] - p[..., :-1, :]) - (r[..., 1:, :] - r[..., :-1, :])).abs().mean()
    return 0.5 * (dx + dy)


@dataclass
class LossTerms:
    total: torch.Tensor
    psnr: torch.Tensor      # L_PSNR
    fn_mse: torch.Tensor    # L_FN-MSE
    grad: torch.Tensor      # L_grad

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "l_psnr": float(self.psnr.detach()),
                "l_fnmse": float(self.fn_mse.detach()), "l_grad": float(self.grad.detach())}


#: per-image loss: the MSE floor of each image's PSNR (1e-4 = 40 dB at MAX 1, the unedited-photo
#: target). Above it an image counts as exact and gives no gradient; without it a few
#: near-perfect images would take all of it (from scratch, a floor of 1e-5 kept a model so
#: close to the identity that it did not learn the recipes' changes). Not used for the
#: shipped weights: see the phnet-grid model card.
PER_IMAGE_FLOOR = 1e-4


def per_image_psnr_loss(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """NOT the published term: ``-mean_i PSNR_i / 10`` (one PSNR per image, MSE floored at
    :data:`PER_IMAGE_FLOOR`). The published L_PSNR pools the MSE over the batch, so an image
    that needs little change (an unedited photo, a small person) counts for almost nothing;
    the mean per-image PSNR -- what the evaluation reports -- weights every image alike."""
    mse = (pred.float() - real.float()).pow(2).flatten(1).mean(1).clamp_min(PER_IMAGE_FLOOR)
    return torch.log10(mse).mean()


def phnet_loss(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor,
               w_psnr: float = W_PSNR, w_fnmse: float = W_FNMSE, w_grad: float = W_GRAD,
               per_image: bool = False) -> LossTerms:
    """The published loss on the unblended prediction. Shapes (B,3,H,W), (B,3,H,W), (B,1,H,W).
    ``per_image``: the PSNR term is :func:`per_image_psnr_loss` instead (same weight)."""
    lp = per_image_psnr_loss(pred, real) if per_image else psnr_loss(pred, real)
    lf = fn_mse(pred, real, mask)
    lg = grad_loss(pred, real, mask)
    return LossTerms(w_psnr * lp + w_fnmse * lf + w_grad * lg, lp, lf, lg)


def temporal_consistency(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """NOT part of the published recipe (opt-in, see ``TrainConfig.temporal_weight``).

    For frame pairs (B,2,C,H,W): the mean absolute difference, inside either frame's mask,
    between the prediction's frame-to-frame change and the real frames' change. Zero when
    the model changes the two frames exactly as the scene changed."""
    dp = pred[:, 1].float() - pred[:, 0].float()
    dr = real[:, 1].float() - real[:, 0].float()
    m = (mask.float() > 0.5).any(1).float()          # (B,1,H,W)
    num = ((dp - dr).abs() * m).flatten(1).sum(1)
    den = (m.flatten(1).sum(1) * pred.shape[2]).clamp_min(1.0)
    return (num / den).mean()


