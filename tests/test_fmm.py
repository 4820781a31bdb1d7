"""FMM (attention-based foreground-background feature map modulation): the module's algebra,
its attention, degenerate masks, the registry configurations, weights and a tiny training run.

Small tensors, one thread: the whole file runs in a few seconds on a CPU.
"""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

torch.set_num_threads(1)

from vidharm.errors import ConfigError  # noqa: E402
from vidharm.models import build_model, create_model, list_models, model_config  # noqa: E402
from vidharm.models.fmm import (FMM, FMMNet, SelfAttention2d, attention,  # noqa: E402
                                background_attention, feature_mask, masked_std, modulate)

FMM_CONFIGS = ("fmm", "fmm-base", "fmm-sa", "fmm-nosa", "phnet-lite-fmm")


def _mask(b, h, w, seed=0):
    """Rectangles of foreground, different per sample, never empty nor full."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(b, 1, h, w)
    for i in range(b):
        y0 = int(torch.randint(0, h // 2, (1,), generator=g))
        x0 = int(torch.randint(0, w // 2, (1,), generator=g))
        m[i, :, y0:y0 + h // 2, x0:x0 + w // 3 + 1] = 1
    return m


def _fg_std(x, fg):
    """Plain per-channel population std over the fg positions (reference, no eps)."""
    out = []
    for b in range(x.shape[0]):
        sel = x[b][:, fg[b, 0]]                      # (C, n_fg)
        out.append(sel.std(dim=1, unbiased=False))
    return torch.stack(out)                          # (B, C)


# ------------------------------------------------------------------------------ algebra


def test_modulation_sets_foreground_std_and_keeps_background():
    torch.manual_seed(0)
    C = 6
    m = FMM(C, reduction=2, self_attention=False)
    with torch.no_grad():
        m.gamma.copy_(torch.linspace(0.5, 2.0, C).view(1, C, 1, 1))
    h = torch.randn(3, C, 9, 11) * torch.linspace(0.5, 3, C).view(1, C, 1, 1) + 1.0
    mask = _mask(3, 9, 11)
    fg = feature_mask(mask, (9, 11))
    out = m(h, mask)
    h_ba = m.attend_background(h, fg)
    got = _fg_std(out, fg)
    want = m.gamma.view(1, C) * _fg_std(h_ba, fg)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-4)
    # the formula itself: gamma * h_f * sigma(h_b^a) / sigma(h_f) on the foreground
    ratio = masked_std(h_ba, fg.float()) / masked_std(h, fg.float())
    torch.testing.assert_close(out[fg.expand_as(out)],
                               (m.gamma * h * ratio)[fg.expand_as(out)])
    # background positions untouched, bit for bit
    bg = (~fg).expand_as(h)
    assert torch.equal(out[bg], h[bg])


def test_full_module_background_is_self_attention_output():
    torch.manual_seed(1)
    m = FMM(8, reduction=4)
    with torch.no_grad():
        m.sa.gamma.fill_(0.7)
    h = torch.randn(2, 8, 8, 8)
    mask = _mask(2, 32, 32)                          # image-size mask, downsampled inside
    fg = feature_mask(mask, (8, 8))
    out = m(h, mask)
    sa = m.sa(h)
    assert not torch.allclose(sa, h)                 # the SA block did something
    bg = (~fg).expand_as(h)
    assert torch.equal(out[bg], sa[bg])


def test_degenerate_masks_identity_no_nan():
    torch.manual_seed(2)
    m = FMM(4, reduction=2, self_attention=False)
    h = torch.randn(3, 4, 6, 6, requires_grad=True)
    mask = torch.zeros(3, 1, 6, 6)
    mask[1] = 1.0                                    # sample 1: all foreground
    mask[2, :, 2:4, 1:5] = 1.0                       # sample 2: normal
    out = m(h, mask)                                 # sample 0: no foreground
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], h[0]) and torch.equal(out[1], h[1])
    assert not torch.equal(out[2], h[2])
    out.sum().backward()
    assert torch.isfinite(h.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    # the attention itself: no background anywhere -> finite (unused) values, not NaN
    q = torch.randn(1, 2, 3, 3)
    v = torch.randn(1, 4, 3, 3)
    assert torch.isfinite(background_attention(q, q, v, torch.zeros(1, 1, 3, 3, dtype=torch.bool))).all()
    # a constant foreground (sigma 0) stays finite too
    hc = torch.ones(1, 4, 6, 6)
    assert torch.isfinite(m(hc, mask[2:])).all()
    # the whole network on empty / full masks
    net = create_model("fmm")
    img = torch.rand(2, 3, 32, 32)
    for val in (0.0, 1.0):
        assert torch.isfinite(net(img, torch.full((2, 1, 32, 32), val))).all()


def test_modulate_functional_handles_batches_independently():
    torch.manual_seed(3)
    h = torch.randn(2, 3, 5, 5)
    h_ba = torch.randn(2, 3, 5, 5)
    fg = torch.zeros(2, 1, 5, 5, dtype=torch.bool)
    fg[0, :, 1:3, 1:4] = True
    out = modulate(h, h_ba, fg, torch.tensor(1.5))
    one = modulate(h[:1], h_ba[:1], fg[:1], torch.tensor(1.5))
    torch.testing.assert_close(out[:1], one)
    assert torch.equal(out[1], h[1])                 # sample 1 has no foreground


# ------------------------------------------------------------------------------ attention


def test_attention_matches_explicit_softmax():
    torch.manual_seed(4)
    q, k = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    v = torch.randn(2, 7, 4, 5)
    keep = torch.rand(2, 20) < 0.6
    keep[:, 0] = True
    got = attention(q, k, v, keep)
    logits = torch.einsum("bdn,bdm->bnm", q.flatten(2), k.flatten(2)) / math.sqrt(3)
    logits = logits.masked_fill(~keep[:, None, :], float("-inf"))
    want = torch.einsum("bnm,bcm->bcn", logits.softmax(-1), v.flatten(2)).view(2, 7, 4, 5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["mask", "gather"])
def test_background_attention_ignores_foreground_keys_and_values(impl):
    torch.manual_seed(5)
    q, k = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    v = torch.randn(2, 8, 6, 6)
    fg = feature_mask(_mask(2, 6, 6, seed=3), (6, 6))
    bg = ~fg
    ref = background_attention(q, k, v, bg, impl)
    k2, v2 = k.clone(), v.clone()
    k2[fg.expand_as(k)] += 100.0 * torch.randn(int(fg.expand_as(k).sum()))
    v2[fg.expand_as(v)] += 100.0 * torch.randn(int(fg.expand_as(v).sum()))
    torch.testing.assert_close(background_attention(q, k2, v2, bg, impl), ref, rtol=0, atol=1e-6)
    # a background key does matter
    k3 = k.clone()
    b, y, x = [int(t[0]) for t in torch.nonzero(bg[:, 0], as_tuple=True)]
    k3[b, :, y, x] += 10.0
    assert not torch.allclose(background_attention(q, k3, v, bg, impl), ref)
    # defined on the foreground only: 0 on the background
    assert torch.equal(ref[bg.expand_as(ref)], torch.zeros(int(bg.expand_as(ref).sum())))


def test_background_attention_implementations_agree():
    torch.manual_seed(9)
    q, k = torch.randn(4, 3, 5, 7), torch.randn(4, 3, 5, 7)
    v = torch.randn(4, 6, 5, 7)
    fg = feature_mask(_mask(4, 5, 7, seed=4), (5, 7))
    fg[2] = False                                     # no foreground
    fg[3] = True                                      # no background
    a = background_attention(q, k, v, ~fg, "mask")
    b = background_attention(q, k, v, ~fg, "gather")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(a[2:], torch.zeros_like(a[2:]))
    # reference for sample 0 by explicit softmax over the background keys
    fi, bi = fg[0, 0].flatten().nonzero()[:, 0], (~fg[0, 0]).flatten().nonzero()[:, 0]
    logits = q[0].flatten(1)[:, fi].T @ k[0].flatten(1)[:, bi] / math.sqrt(3)
    want = v[0].flatten(1)[:, bi] @ logits.softmax(-1).T             # (C, n_fg)
    torch.testing.assert_close(a[0].flatten(1)[:, fi], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        background_attention(q, k, v, ~fg, "bogus")


def test_module_hba_ignores_foreground_features():
    """Perturbing the features at one foreground position changes h_b^a only at that
    position (its own query), nowhere else: foreground keys/values are not attended."""
    torch.manual_seed(6)
    m = FMM(8, reduction=2, self_attention=False)
    h = torch.randn(1, 8, 6, 6)
    fg = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    fg[..., 1:4, 2:5] = True
    ref = m.attend_background(h, fg)
    h2 = h.clone()
    h2[0, :, 2, 3] += 50.0 * torch.randn(8)           # a foreground position
    got = m.attend_background(h2, fg)
    other = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    other[..., 2, 3] = False
    torch.testing.assert_close(got[other.expand_as(got)], ref[other.expand_as(ref)],
                               rtol=0, atol=1e-6)


def test_attention_uses_fused_kernel_on_cpu():
    """Memory stays bounded: the fused (flash) SDPA kernel accepts our inputs, forward and
    backward, masked and unmasked (it raises if SDPA would fall back to the math path)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    torch.manual_seed(7)
    m = FMM(16, reduction=8)
    with torch.no_grad():
        m.sa.gamma.fill_(0.5)
    for impl in ("mask", "gather"):
        m.impl = impl
        h = torch.randn(2, 16, 8, 8, requires_grad=True)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            out = m(h, _mask(2, 8, 8))
            out.square().mean().backward()
        assert torch.isfinite(h.grad).all()


# ------------------------------------------------------------------------------ shapes, grads


def test_shapes_and_mask_downsampling():
    m = FMM(12, reduction=4)
    h = torch.randn(2, 12, 5, 7)
    out = m(h, _mask(2, 20, 28))
    assert out.shape == h.shape and out.dtype == h.dtype
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1
    mask[..., 2, 2] = 1                               # a quarter of a 2x2 cell: background
    fm = feature_mask(mask, (2, 2))
    assert fm.tolist() == [[[[True, False], [False, False]]]]
    with pytest.raises(ValueError):
        m(torch.randn(1, 5, 4, 4), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError):
        FMM(8, self_attention=False, modulation=False)
    sa = SelfAttention2d(8)
    x = torch.randn(1, 8, 3, 3)
    assert torch.equal(sa(x), x)                      # gamma_sa starts at 0: identity
    for name in ("fmm", "phnet-lite-fmm"):
        net = create_model(name)
        for hw in ((32, 32), (40, 24), (17, 29)):     # padded and cropped when needed
            with torch.no_grad():
                out = net(torch.rand(1, 3, *hw), _mask(1, *hw))
            assert out.shape == (1, 3, *hw) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_mixed_precision_autocast_cpu():
    torch.manual_seed(10)
    for name in ("fmm", "phnet-lite-fmm"):
        net = create_model(name).eval()
        img, mask = torch.rand(1, 3, 64, 64), _mask(1, 64, 64)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(img, mask)
        assert out.shape == (1, 3, 64, 64) and torch.isfinite(out.float()).all()
    m = FMM(8, reduction=4)
    h = torch.randn(1, 8, 6, 6, dtype=torch.bfloat16)
    assert m.to(torch.bfloat16)(h, _mask(1, 6, 6)).dtype == torch.bfloat16


@pytest.mark.parametrize("name", FMM_CONFIGS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(8)
    net = create_model(name).train()
    for mod in net.modules():                         # gamma_sa = 0 blocks q/k/v gradients
        if isinstance(mod, SelfAttention2d):
            with torch.no_grad():
                mod.gamma.fill_(0.5)
    img = torch.rand(2, 3, 64, 64)                    # fmm's bottleneck: 4x4 positions
    real = (img * 0.8 + 0.1).detach()
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 8:48, 16:40] = 1
    mask[1, :, 20:64, 0:32] = 1
    out = net(img, mask)
    ((out - real) ** 2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


# ------------------------------------------------------------------------------ registry


def test_registry_configs_and_weights_round_trip(tmp_path):
    from vidharm.models.weights import load_any, load_weights, save_weights
    assert set(FMM_CONFIGS) <= set(list_models())
    sizes = {}
    for name in FMM_CONFIGS:
        cfg = model_config(name)
        assert cfg["name"] == name
        net = create_model(name).eval()
        assert net.config == cfg
        sizes[name] = sum(p.numel() for p in net.parameters())
        again = build_model(net.config)
        assert again.config == net.config
        path = save_weights(net, tmp_path / f"{name}.safetensors", {"note": "test"})
        back = load_weights(path)
        assert type(back) is type(net) and back.config == net.config
        img, mask = torch.rand(1, 3, 32, 32), _mask(1, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(back(img, mask), net(img, mask), rtol=0, atol=0)
        assert load_any(path, name).config["name"] == name
    assert sizes["fmm"] <= 1_000_000
    assert sizes["fmm-base"] < sizes["fmm-nosa"] < sizes["fmm-sa"] < sizes["fmm"]
    assert model_config("fmm-base")["fmm_levels"] == []
    assert model_config("fmm-sa")["modulation"] is False
    assert model_config("fmm-nosa")["self_attention"] is False
    # the FMM-in-PHNet option is off by default: phnet-lite unchanged
    lite, lite_fmm = create_model("phnet-lite"), create_model("phnet-lite-fmm")
    assert "fmm" not in lite.config and lite.fmm is None
    extra = set(lite_fmm.state_dict()) - set(lite.state_dict())
    assert extra and all(k.startswith("fmm.") for k in extra)
    assert set(lite.state_dict()) <= set(lite_fmm.state_dict())
    # options are checked
    with pytest.raises(ConfigError, match="unknown model option"):
        create_model("fmm", bogus=1)
    with pytest.raises(ConfigError, match="invalid model configuration"):
        create_model("fmm", fmm_levels=[7])
    with pytest.raises(ConfigError, match="invalid model configuration"):
        create_model("phnet-lite-fmm", fmm={"levels": [9]})
    m = create_model("fmm", fmm_levels=[0, 1])
    assert sorted(m.fmm) == ["0", "1"] and m.fmm["1"].channels == 64


def test_harmonizer_accepts_an_fmm_model():
    from vidharm.api import Harmonizer
    h = Harmonizer(create_model("fmm"), device="cpu", work_size=32)
    rng = np.random.default_rng(0)
    comp = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:30] = 255
    out = h(comp, mask)
    assert out.shape == comp.shape and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], comp[mask == 0])


# ------------------------------------------------------------------------------ training


class ShiftedCopies(Dataset):
    """32x32 composites: a smooth random image whose foreground rectangle is a colour-shifted
    (per-channel gain and offset, one cast plus jitter) copy of itself; ``real`` is the
    unshifted image."""

    def __init__(self, n: int, size: int = 32, seed: int = 0):
        self.n, self.size, self.seed = n, size, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 10_007 + i)
        s = self.size
        yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
        base = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.25
        real = base + 0.15 * torch.sin(6 * xx + 6 * torch.rand(3, 1, 1, generator=g)) \
            + 0.1 * torch.cos(5 * yy)
        real = real.clamp(0, 1)
        mask = torch.zeros(1, s, s)
        y0, x0 = (int(v) for v in torch.randint(0, s // 2, (2,), generator=g))
        mask[:, y0:y0 + s // 2, x0:x0 + s // 2] = 1
        # one colour cast for every sample (warmer, darker), with a little jitter
        gain = torch.tensor([1.15, 0.9, 0.7]).view(3, 1, 1) \
            + (torch.rand(3, 1, 1, generator=g) - 0.5) * 0.1
        shift = torch.tensor([0.05, 0.0, -0.05]).view(3, 1, 1)
        comp = real * (1 - mask) + (real * gain + shift).clamp(0, 1) * mask
        return {"composite": comp, "mask": mask, "real": real}


def test_tiny_training_run_lowers_the_loss(tmp_path):
    from vidharm.models.weights import load_weights
    from vidharm.training.losses import phnet_loss
    from vidharm.training.train import TrainConfig, train
    fixed = ShiftedCopies(8, seed=123)
    b = {k: torch.stack([fixed[i][k] for i in range(8)]) for k in ("composite", "mask", "real")}
    torch.manual_seed(0)
    model = create_model("fmm")

    def loss():
        with torch.no_grad():
            return float(phnet_loss(model(b["composite"], b["mask"]), b["real"], b["mask"]).total)

    before = loss()
    cfg = TrainConfig(size=32, batch_size=4, steps=30, lr=3e-4, num_workers=0,
                      out_dir=str(tmp_path / "run"), checkpoint_every=0, val_every=0, log_every=1,
                      progress=False, tensorboard=False, seed=0, model="fmm")
    res = train(cfg, model=model, train_dataset=ShiftedCopies(64), val_dataset=ShiftedCopies(4, seed=9))
    after = loss()
    assert after < 0.9 * before, (before, after)
    with open(tmp_path / "run" / "log.csv") as f:
        ls = [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]
    assert len(ls) == 30 and all(math.isfinite(v) for v in ls)
    assert math.isfinite(res["validation"]["val_psnr"])
    back = load_weights(res["weights"])               # the training loop saved an FMM model
    assert back.config["name"] == "fmm" and isinstance(back, FMMNet)
