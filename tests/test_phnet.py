"""PHNet model family: golden vectors, layouts, sizes, streaming, gradients, registry."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidharm.errors import ConfigError
from vidharm.models import (PUBLISHED_MODELS, build_model, create_model, list_models,
                            model_config)
from vidharm.models import blocks
from vidharm.models.blocks import PatchHarmonizer, PatchNorm
from vidharm.models.phnet import PHNet, infer

REF = Path(__file__).resolve().parent / "data" / "phnet_reference"  # vendored copy of shared/phnet-reference
GOLDEN = REF / "golden"
TOL = 1e-5

def needs_ref(f):  # the reference files are vendored (tests/data): always run
    return f


def _manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


def _golden(name: str):
    d = np.load(GOLDEN / name)
    state = {k[len("state."):]: torch.from_numpy(d[k]) for k in d.files if k.startswith("state.")}
    return d, state


def _tsv(name: str) -> dict:
    rows = {}
    for line in (REF / name).read_text().splitlines():
        if line.strip():
            key, shape, dtype = line.split("\t")
            rows[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return rows


def _inputs(b=2, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    mask = torch.zeros(b, 1, h, w)
    mask[..., h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 1.0
    return image, mask


def _tiny(**opts) -> PHNet:
    torch.manual_seed(0)
    return create_model("phnet-lite", enc_sizes=[3, 4, 8, 8, 16, 16, 32], **opts)


# ------------------------------------------------------------------------ golden vectors

@needs_ref
@pytest.mark.parametrize("fname", ["pn_G3_C6.npz", "pn_G4_C8.npz", "pn_G10_C4.npz"])
def test_pn_golden(fname):
    d, state = _golden(fname)
    info = _manifest()[fname]
    pn = PatchNorm(info["channels"], info["grid"])
    pn.load_state_dict(state, strict=True)
    assert list(d["input.features"].shape[-2:]) == info["hw"]
    with torch.no_grad():
        out = pn(torch.from_numpy(d["input.features"]), torch.from_numpy(d["input.mask"]))
    assert out.shape == d["output"].shape
    assert (out - torch.from_numpy(d["output"])).abs().max().item() <= TOL


@needs_ref
def test_pfe_golden():
    d, state = _golden("pfe_stats_G5.npz")
    pfe = PatchHarmonizer(_manifest()["pfe_stats_G5.npz"]["grid"])
    pfe.load_state_dict(state, strict=True)
    with torch.no_grad():
        fg_harm, composite = pfe(torch.from_numpy(d["input.image"]),
                                 torch.from_numpy(d["input.mask"]))
    assert (fg_harm - torch.from_numpy(d["output.fg_harmonized"])).abs().max().item() <= TOL
    assert (composite - torch.from_numpy(d["output.composite"])).abs().max().item() <= TOL


@needs_ref
@pytest.mark.parametrize("fname,base", [("phnet_ffhqh_like.npz", "phnet-ffhqh"),
                                        ("phnet_iharmony4_like.npz", "phnet-iharmony4")])
def test_phnet_golden(fname, base):
    d, state = _golden(fname)
    info = _manifest()[fname]
    model = create_model(base, **info["config"]).eval()     # published code path, tiny widths
    assert len(state) == info["n_state_keys"]
    model.load_state_dict(state, strict=True)
    image, mask = torch.from_numpy(d["input.image"]), torch.from_numpy(d["input.mask"])
    assert list(image.shape[-2:]) == info["input_hw"]
    with torch.no_grad():
        out = model(image, mask)
    ref = torch.from_numpy(d["output.harmonized"])
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL
    assert abs(out.mean().item() - info["output_mean"]) <= TOL


# ------------------------------------------------------------------------ published layouts

@pytest.mark.parametrize("name,params,tsv", [("phnet-ffhqh", 39_921_641, "state_dict_ffhqh.tsv"),
                                             ("phnet-iharmony4", 9_994_295,
                                              "state_dict_iharmony4.tsv")])
def test_published_layout(name, params, tsv):
    with torch.device("meta"):                     # shapes only: no 160 MB of random init
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    expected = _tsv(tsv)
    got = {k: (tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}
    assert list(got) == list(expected)             # same keys, same order
    assert got == expected


def test_registry():
    names = list_models()
    assert {"phnet-ffhqh", "phnet-iharmony4", "phnet-lite", "phnet-lite-s"} <= set(names)
    assert set(PUBLISHED_MODELS) <= set(names)
    for n in names:
        cfg = model_config(n)
        assert cfg["name"] == n and cfg["arch"] in ("phnet", "fmm", "grid")
        json.dumps(cfg)                            # JSON-able, so weights can record it
    lite = create_model("phnet-lite")
    assert lite.config == model_config("phnet-lite")
    assert 300_000 <= sum(p.numel() for p in lite.parameters()) <= 1_500_000
    assert not lite.config["quirk_bg_div255"] and not lite.config["quirk_scalar_se"]
    small = create_model("phnet-lite-s")
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in lite.parameters())
    # overrides and rebuilding from a config
    m = create_model("phnet-lite", skip_kernel=3)
    assert m.config["skip_kernel"] == 3 and m.skip[0].rconv.kernel_size == (3, 3)
    again = build_model(m.config)
    assert again.config == m.config
    with pytest.raises(ConfigError, match="did you mean 'phnet-lite'"):
        create_model("phnet-lit")
    with pytest.raises(ConfigError, match="unknown model option"):
        create_model("phnet-lite", widths=[1])


# ------------------------------------------------------------------------ cell statistics

@pytest.mark.parametrize("h,w,g", [(29, 35, 3), (64, 64, 10), (7, 9, 10), (8, 12, 5), (5, 5, 1)])
def test_cell_sums_match_loops(h, w, g):
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    sh, sw = h // g, w // g
    ref = torch.zeros(2, 3, g, g, dtype=torch.float64)
    for i in range(g):                             # the published rule, written as loops
        for j in range(g):
            y1 = (i + 1) * sh if i < g - 1 else h
            x1 = (j + 1) * sw if j < g - 1 else w
            ref[:, :, i, j] = x[:, :, i * sh: y1, j * sw: x1].sum(dim=(2, 3))
    assert torch.allclose(blocks.cell_sums(x, g), ref, atol=1e-12)
    # expanding per-cell values back to pixels: matmul path (CPU fp32) == indexing path
    cells = torch.randn(2, 3, g, g)
    a = blocks.expand_cells(cells, h, w)
    b = blocks.expand_cells(cells.double(), h, w).float()
    assert torch.equal(a, b)
    iy, ix = blocks.cell_index(h, g), blocks.cell_index(w, g)
    assert torch.equal(a, cells[:, :, iy][:, :, :, ix])


def test_pooled_stats_equal_direct():
    x = torch.rand(2, 6, 40, 56)
    n, mu_c, m2_c = blocks.cell_moments(x, 5)
    mu, sd = blocks.pooled_mean_std(n, mu_c, m2_c)
    mu_ref, sd_ref = blocks.mean_std(x)
    assert torch.allclose(mu, mu_ref, atol=1e-6) and torch.allclose(sd, sd_ref, atol=1e-6)
    assert torch.allclose(sd_ref.flatten(1), x.flatten(2).std(dim=2), atol=1e-6)


# ------------------------------------------------------------------------ sizes and devices

def test_odd_sizes_and_padding():
    model = _tiny().eval()
    for h, w in [(67, 131), (5, 7), (16, 24)]:
        image, mask = _inputs(2, h, w)
        with torch.no_grad():
            out = model(image, mask)
        assert out.shape == (2, 3, h, w) and torch.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 1
    # multiple of 8: forward == the unpadded published path, bit for bit
    image, mask = _inputs(2, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(image, mask), model.forward_padded(image, mask))
        # 67x131: replicate-padded to 72x136, then cropped
        image, mask = _inputs(1, 67, 131)
        pad = (0, 5, 0, 5)
        ref = model.forward_padded(torch.nn.functional.pad(image, pad, mode="replicate"),
                                   torch.nn.functional.pad(mask, pad, mode="replicate"))
        assert torch.equal(model(image, mask), ref[..., :67, :131])


def test_bad_shapes_raise():
    model = _tiny().eval()
    image, mask = _inputs(1, 32, 32)
    with pytest.raises(ValueError):
        model(image[:, :2], mask)
    with pytest.raises(ValueError):
        model(image, mask[..., :16])


def test_infer_helper_cpu():
    model = _tiny().eval()
    image, mask = _inputs(1, 48, 64)
    with torch.no_grad():
        ref = model(image, mask)
    assert torch.equal(infer(model, image, mask), ref)
    assert torch.equal(infer(model, image, mask, precision="fp16"), ref)  # CPU: stays fp32
    with pytest.raises(ValueError):
        infer(model, image, mask, precision="int8")


def test_stats_stay_fp32_under_autocast():
    pn = PatchNorm(4, 3)
    feat = torch.randn(1, 4, 16, 16).bfloat16()
    mask = (torch.rand(1, 1, 16, 16) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pn(feat, mask)
    assert out.dtype == torch.float32
    model = _tiny().eval()
    image, mask = _inputs(1, 32, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, mask)
    with torch.no_grad():
        ref = model(image, mask)
    assert (out.float() - ref).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_fp16_close_to_fp32():  # pragma: no cover - runs only on a GPU machine
    from vidharm.models.phnet import prepare
    model = _tiny().eval()
    image, mask = _inputs(1, 64, 96)
    with torch.no_grad():
        ref = model(image, mask)
    gpu = prepare(model, "cuda")
    assert (infer(gpu, image, mask, precision="fp32").cpu() - ref).abs().max() < 1e-3
    assert (infer(gpu, image, mask, precision="fp16").cpu() - ref).abs().max() < 2e-2


# ------------------------------------------------------------------------ streaming

def _clip(t=3, b=2, h=48, w=64):
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(t, b, 3, h, w, generator=g)
    masks = torch.zeros(t, b, 1, h, w)
    for i in range(t):
        masks[i, ..., 8 + 2 * i: 40, 16: 48 - 3 * i] = 1.0
    return frames, masks


def test_streaming_zero_is_per_frame():
    model = _tiny().eval()
    frames, masks = _clip()
    with torch.no_grad():
        ref = [model(f, m) for f, m in zip(frames, masks)]
        model.set_streaming(0.0)
        got = [model(f, m) for f, m in zip(frames, masks)]
    assert all(torch.equal(a, b) for a, b in zip(ref, got))


def test_streaming_smooths_and_resets():
    model = _tiny().eval()
    frames, masks = _clip()
    with torch.no_grad():
        ref = [model(f, m) for f, m in zip(frames, masks)]
        model.set_streaming(0.7)
        assert model.smoothing == 0.7
        got = [model(f, m) for f, m in zip(frames, masks)]
        assert torch.equal(got[0], ref[0])        # the first frame has nothing to smooth with
        assert (got[1] - ref[1]).abs().max() > 1e-4
        assert (got[2] - ref[2]).abs().max() > 1e-4
        model.reset_stream()
        assert torch.equal(model(frames[2], masks[2]), ref[2])
        # batch elements are separate streams: element 1 alone does not see element 0
        model.reset_stream()
        both = [model(f, m) for f, m in zip(frames, masks)]
        model.reset_stream()
        one = [model(f[1:], m[1:]) for f, m in zip(frames, masks)]
        assert (both[2][1:] - one[2]).abs().max() < 1e-5
        model.set_streaming(0.0)
        assert torch.equal(model(frames[1], masks[1]), ref[1])
    with pytest.raises(ValueError):
        model.set_streaming(1.0)


# ------------------------------------------------------------------------ training

@pytest.mark.parametrize("name", ["phnet-lite", "phnet-lite-s"])
def test_lite_gradients_flow(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    image, mask = _inputs(2, 64, 64)
    image.requires_grad_(True)
    out = model(image, mask)
    assert out.shape == (2, 3, 64, 64)
    ((out - image.detach()) ** 2).mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n
    assert image.grad is not None and torch.isfinite(image.grad).all()
