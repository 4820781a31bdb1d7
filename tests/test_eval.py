"""Evaluation: metrics against hand computation, buckets, evaluate() on folders and synthetic
sets, the report table/JSON and the contact sheet."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for the helpers of test_training

from vidharm.training import metrics as M  # noqa: E402
from vidharm.training.evaluate import EvalReport, evaluate, render_table, to_json  # noqa: E402


# ------------------------------------------------------------------------------ metrics


def test_metrics_match_hand_computation():
    gt = np.array([[[10, 20], [30, 200]], [[0, 0], [0, 0]], [[50, 60], [70, 80]]], np.float64)  # (3,2,2)
    res = gt.copy()
    res[0, 0, 0] += 10      # inside the mask
    res[2, 1, 1] -= 4       # outside the mask
    mask = np.array([[1, 0], [0, 0]], np.float64)
    t = lambda a: torch.tensor(a / 255.0, dtype=torch.float32)[None]
    v = M.image_metrics(t(res), t(gt), torch.tensor(mask)[None, None].float())
    mse = (100 + 16) / 12
    fmse = 100 / (3 * 1)
    assert float(v["mse"][0]) == pytest.approx(mse)
    assert float(v["fmse"][0]) == pytest.approx(fmse)
    assert float(v["psnr"][0]) == pytest.approx(10 * math.log10(200 ** 2 / mse))      # MAX = gt's max
    assert float(v["fpsnr"][0]) == pytest.approx(10 * math.log10(200 ** 2 / fmse))
    assert float(v["fg_ratio"][0]) == pytest.approx(0.25)
    v255 = M.image_metrics(t(res), t(gt), torch.tensor(mask)[None, None].float(), psnr_max="255")
    assert float(v255["psnr"][0]) == pytest.approx(10 * math.log10(255 ** 2 / mse))
    with pytest.raises(ValueError):
        M.image_metrics(t(res), t(gt), torch.ones(1, 1, 2, 2), psnr_max="1")


def test_metrics_quantise_to_8_bit_and_blend():
    gt = torch.full((1, 3, 4, 4), 100 / 255)
    res = gt + 0.3 / 255                        # rounds back to 100
    assert float(M.image_metrics(res, gt, torch.ones(1, 1, 4, 4))["mse"][0]) == 0.0
    assert math.isfinite(float(M.image_metrics(res, gt, torch.ones(1, 1, 4, 4))["psnr"][0]))
    pred, comp = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    mask = torch.tensor([[[[0.6, 0.4], [1.0, 0.0]]]])
    assert M.blend(pred, comp, mask)[0, 0].tolist() == [[1, 0], [1, 0]]


def test_buckets_and_summary():
    assert [M.bucket_of(r) for r in (0.0, 0.049, 0.05, 0.149, 0.15, 1.0)] == \
        ["0-5%", "0-5%", "5-15%", "5-15%", "15-100%", "15-100%"]
    acc = M.MetricAccumulator()
    h = w = 20
    gt = torch.rand(4, 3, h, w)
    res = (gt + 0.05).clamp(0, 1)
    masks = torch.zeros(4, 1, h, w)
    masks[0, :, :2, :10] = 1      # 5 %  -> 5-15 %
    masks[1, :, :1, :10] = 1      # 2.5 % -> 0-5 %
    masks[2, :, :10, :] = 1       # 50 %
    # masks[3] empty -> 0-5 %, no fMSE
    acc.update(M.blend(res, gt, masks), gt, masks)
    s = acc.summary()
    assert s["all"]["count"] == 4
    assert (s["0-5%"]["count"], s["5-15%"]["count"], s["15-100%"]["count"]) == (2, 1, 1)
    per = acc.per_image
    assert math.isnan(per[3]["fmse"])
    assert s["0-5%"]["fmse"] == pytest.approx(per[1]["fmse"])        # the empty mask is left out
    assert s["all"]["mse"] == pytest.approx(np.mean([p["mse"] for p in per]))


# ------------------------------------------------------------------------------ evaluate


class Copy(nn.Module):
    """Returns the composite: results must equal the baseline."""

    def forward(self, image, mask):
        return image


class Half(nn.Module):
    def forward(self, image, mask):
        return torch.full_like(image, 0.5)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _samples(n=6, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        real = torch.rand(3, size, size, generator=g)
        mask = torch.zeros(1, size, size)
        mask[:, : 2 + 4 * i, : 2 + 4 * i] = 1
        comp = torch.where(mask.bool().expand(3, -1, -1), (real * 0.7 + 0.2).clamp(0, 1), real)
        out.append({"composite": comp, "mask": mask, "real": real})
    return out


def test_evaluate_baseline_and_model(tmp_path):
    ds = ListDataset(_samples())
    base = evaluate(None, ds, size=None)
    assert base.model is None and base.count == 6
    assert base.composite["all"]["count"] == 6
    same = evaluate(Copy(), ds, size=None, contact_sheet=tmp_path / "sheet.png", sheet_rows=3)
    for b in ("all", "0-5%", "5-15%", "15-100%"):
        assert same.model[b] == same.composite[b]
    assert same.composite == base.composite
    im = Image.open(same.contact_sheet)
    assert im.size[1] > 3 * 192 and im.size[0] > 3 * 192          # 3 rows of 3 tiles
    assert not [p for p in tmp_path.iterdir() if p.name != "sheet.png"]   # atomic: no leftovers
    half = evaluate(Half(), ds, size=16)                             # resized to 16 and back
    assert half.model["all"]["mse"] != half.composite["all"]["mse"]
    assert half.size == 16


def test_report_table_and_json():
    rep = evaluate(Half(), ListDataset(_samples(4)), size=None, psnr_max="255", name="tiny")
    from rich.console import Console
    con = Console(record=True, width=200)
    con.print(render_table(rep))
    text = con.export_text()
    for word in ("tiny", "0-5%", "5-15%", "15-100%", "all", "composite PSNR", "model fMSE", "MAX = 255"):
        assert word in text
    d = json.loads(to_json(rep))
    assert d["psnr_max"] == "255" and d["count"] == 4 and set(d["model"]) == {"all", "0-5%", "5-15%", "15-100%"}
    assert isinstance(rep, EvalReport)


def test_evaluate_iharmony4_folder(tmp_path):
    from test_training import build_iharmony4
    build_iharmony4(tmp_path / "ih")
    rep = evaluate(Copy(), tmp_path / "ih", split="test", size=32, contact_sheet=tmp_path / "s.png")
    assert rep.count == 4 and rep.name == "ih"
    assert rep.model["all"] == rep.composite["all"]
    assert Path(rep.contact_sheet).is_file()
    full = evaluate(None, tmp_path / "ih", split="test", size=None)   # own resolution (40x48)
    assert full.count == 4


def test_evaluate_temporal_pairs(tmp_path):
    from test_training import _fake_clip, make_photo
    from vidharm.training.data import TemporalPairs
    rec = make_photo(tmp_path / "src", "f", 3, h=48, w=64)
    frame, mask = np.asarray(Image.open(rec.image)), np.asarray(Image.open(rec.mask))
    clip = _fake_clip(tmp_path / "clip", [frame] * 3, [mask] * 3)
    ds = TemporalPairs([clip], size=32, length=4, seed=0)
    rep = evaluate(Copy(), ds, size=None)
    assert rep.count == 8 and rep.temporal["pairs"] == 4
    assert rep.temporal["composite"] == pytest.approx(0.0, abs=1e-6)  # a still clip: no flicker
    assert rep.temporal["model"] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_phnet_lite():
    models = pytest.importorskip("vidharm.models")
    if not hasattr(models, "create_model"):
        pytest.skip("vidharm.models.create_model not there yet")
    torch.manual_seed(0)
    net = models.create_model("phnet-lite")
    rep = evaluate(net, ListDataset(_samples(2, size=40)), size=64)
    assert rep.model_name == "phnet-lite" and math.isfinite(rep.model["all"]["psnr"])


@pytest.mark.parametrize("script", ["bench/sheet_shift.py", "bench/relit_room.py",
                                    "bench/real_frames.py", "bench/scene_shortcut.py",
                                    "bench/error_parts.py",
                                    "scripts/export_onnx.py"])
def test_bench_scripts_take_help_and_refuse_unknown_options(script, tmp_path):
    """``--help`` prints the script's usage and does nothing else (export_onnx.py used to
    rewrite the shipped ONNX files, the bench scripts took it for a weights file); an unknown
    option is one line and exit 2, not a traceback."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    onnx = sorted((root / "vidharm" / "weights").glob("*.onnx"))
    before = [p.stat().st_mtime_ns for p in onnx]
    r = subprocess.run([sys.executable, str(root / script), "--help"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) >= 3
    assert [p.stat().st_mtime_ns for p in onnx] == before
    r = subprocess.run([sys.executable, str(root / script), "--no-such-option"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    err = [l for l in r.stderr.splitlines() if "no-such-option" in l]
    assert err and "Traceback" not in r.stderr
