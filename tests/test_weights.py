"""Weights: published .pth loading (safe, validated, one-line errors) and vidharm safetensors."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vidharm.errors import InputError
from vidharm.models import create_model
from vidharm.models.weights import (detect_published, infer_config, load_any, load_published,
                                    load_weights, read_metadata, read_state_dict, save_weights)

GOLDEN = Path(__file__).resolve().parent / "data" / "phnet_reference" / "golden"
def needs_ref(f):  # the reference files are vendored (tests/data): always run
    return f
TINY = [3, 4, 8, 8, 16, 16, 32]
GOLDEN_SIZES = [3, 4, 8, 16, 32, 64, 128]   # the widths the golden files use


class _RunsCode:
    """Pickles to 'call exec(code)' on load: a malicious checkpoint."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _one_line_error(exc_info) -> str:
    err = exc_info.value
    text = err.one_line()
    assert "\n" not in text and "\n" not in str(err)
    assert "Traceback" not in text
    return text


def _tiny_state(base="phnet-iharmony4"):
    torch.manual_seed(0)
    return create_model(base, enc_sizes=TINY).state_dict()


def _inputs(b=1, h=48, w=64):
    g = torch.Generator().manual_seed(3)
    image = torch.rand(b, 3, h, w, generator=g)
    mask = torch.zeros(b, 1, h, w)
    mask[..., 8:40, 16:48] = 1.0
    return image, mask


# ------------------------------------------------------------------------ published .pth

@needs_ref
@pytest.mark.parametrize("fname,base", [("phnet_ffhqh_like.npz", "phnet-ffhqh"),
                                        ("phnet_iharmony4_like.npz", "phnet-iharmony4")])
def test_load_published_golden(tmp_path, fname, base):
    d = np.load(GOLDEN / fname)
    sd = {k[6:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("state.")}
    path = tmp_path / "golden.pth"
    torch.save(sd, path)
    image, mask = torch.from_numpy(d["input.image"]), torch.from_numpy(d["input.mask"])
    ref = torch.from_numpy(d["output.harmonized"])
    # detected from the shapes
    auto = load_published(path)
    assert auto.config["enc_sizes"] == GOLDEN_SIZES and not auto.training
    # into a given model
    given = load_published(path, create_model(base, enc_sizes=GOLDEN_SIZES))
    for model in (auto, given):
        with torch.no_grad():
            assert (model(image, mask) - ref).abs().max().item() <= 1e-5


def test_detect_and_infer_config():
    sd_ih = {k: torch.empty(v.shape, dtype=v.dtype)
             for k, v in create_model("phnet-iharmony4", enc_sizes=TINY).state_dict().items()}
    assert detect_published(sd_ih) is None                      # tiny widths: not published
    cfg = infer_config(sd_ih)
    assert cfg["enc_sizes"] == TINY and cfg["grid_count"] == [10, 5, 1]
    with torch.device("meta"):
        for name in ("phnet-ffhqh", "phnet-iharmony4"):
            sd = create_model(name).state_dict()
            assert detect_published(sd) == name
            assert infer_config(sd)["grid_count"] == create_model(name).config["grid_count"]
    lite = create_model("phnet-lite").state_dict()
    cfg = infer_config(lite)
    assert cfg["enc_sizes"] == [3, 8, 16, 32, 64, 128, 256] and cfg["skip_kernel"] == 1
    assert cfg["keep_unused"] is False and cfg["quirk_scalar_se"] is False
    with pytest.raises(InputError):
        infer_config({"a": torch.zeros(1)})


def test_wrong_config_names_the_right_one(tmp_path):
    path = tmp_path / "iharmony512.pth"
    torch.manual_seed(0)
    torch.save(create_model("phnet-iharmony4").state_dict(), path)
    assert load_published(path).config["name"] == "phnet-iharmony4"   # auto-detected
    with pytest.raises(InputError) as ei:
        load_published(path, "phnet-ffhqh")
    text = _one_line_error(ei)
    assert "do not fit model 'phnet-ffhqh'" in text
    assert "8 missing keys" in text and "wrong shapes" in text
    assert "encoder.1.0.weight is (32,16,3,3) in the file vs (64,16,3,3) in the model" in text
    assert "it is a phnet-iharmony4 checkpoint" in text


def test_text_file(tmp_path):
    path = tmp_path / "ffhqh256.pth"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(InputError) as ei:
        load_published(path)
    assert "is not a PyTorch checkpoint" in _one_line_error(ei)


def test_truncated_file(tmp_path):
    full = tmp_path / "full.pth"
    torch.save(_tiny_state(), full)
    data = full.read_bytes()
    for n, cut in enumerate((len(data) // 2, 100)):
        path = tmp_path / f"cut{n}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError) as ei:
            load_published(path)
        assert "cannot read weights file" in _one_line_error(ei)


def test_missing_empty_and_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_published(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        load_published(tmp_path / "empty.pth")
    with pytest.raises(InputError, match="is a folder"):
        load_published(tmp_path)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_code_executing_pickle_is_refused(tmp_path, how):
    marker = tmp_path / "pwned"
    payload = {"encoder.0.0.weight": _RunsCode(f"open({str(marker)!r}, 'w').close()")}
    path = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    with pytest.raises(InputError) as ei:
        load_published(path)
    assert "refused to load" in _one_line_error(ei)
    assert not marker.exists()                       # the code did not run
    with pytest.raises(InputError):
        load_any(path)
    assert not marker.exists()


def test_not_a_flat_state_dict(tmp_path):
    sd = _tiny_state()
    cases = {
        "list": ([1, 2, 3], "holds a list"),
        "wrapper": ({"state_dict": sd, "epoch": 3}, "wrapper dict"),
        "values": ({"a": torch.zeros(2), "b": 3}, "not a flat state dict"),
        "empty": ({}, "empty dict"),
        "nan": ({**sd, "encoder.0.0.bias": torch.full_like(sd["encoder.0.0.bias"], float("nan"))},
                "NaN/Inf"),
    }
    for name, (obj, words) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        with pytest.raises(InputError) as ei:
            load_published(path)
        assert words in _one_line_error(ei), name


def test_wrong_keys(tmp_path):
    sd = _tiny_state()
    path = tmp_path / "renamed.pth"
    torch.save({k.replace("encoder", "enc"): v for k, v in sd.items()}, path)
    with pytest.raises(InputError) as ei:
        load_published(path, create_model("phnet-iharmony4", enc_sizes=TINY))
    text = _one_line_error(ei)
    assert "12 missing keys (encoder.0.0.weight" in text and "12 unexpected keys (enc.0.0.weight" in text
    # no name and an unknown layout: still one line
    with pytest.raises(InputError) as ei:
        load_published(path)
    assert "not a PHNet state dict" in _one_line_error(ei)
    # DataParallel prefix: reported with a hint, not stripped silently
    path = tmp_path / "module.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    with pytest.raises(InputError) as ei:
        load_published(path, create_model("phnet-iharmony4", enc_sizes=TINY))
    assert "'module.'" in _one_line_error(ei)
    # unknown model name
    with pytest.raises(InputError, match="unknown model"):
        load_published(path, "phnet-nope")


def test_read_state_dict_is_plain(tmp_path):
    sd = _tiny_state()
    path = tmp_path / "x.pth"
    torch.save(sd, path)
    got = read_state_dict(path)
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


# ------------------------------------------------------------------------ vidharm safetensors

def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("phnet-lite", enc_sizes=TINY).train()
    image, mask = _inputs(2)
    model(image, mask)                                       # move the BatchNorm statistics
    model.eval()
    path = save_weights(model, tmp_path / "w" / "lite.safetensors", {"epoch": 7, "note": "x"})
    assert not Path(str(path) + ".part").exists()
    meta = read_metadata(path)
    assert meta["vidharm.model"] == "phnet-lite" and meta["note"] == "x" and meta["epoch"] == "7"
    assert json.loads(meta["vidharm.config"]) == model.config
    again = load_weights(path)
    assert again.config == model.config and not again.training
    with torch.no_grad():
        assert torch.equal(again(image, mask), model(image, mask))
    assert torch.equal(load_any(path)(image, mask), again(image, mask))
    with pytest.raises(InputError, match="holds a 'phnet-lite' model"):
        load_any(path, "phnet-ffhqh")


def test_safetensors_errors(tmp_path):
    from safetensors.torch import save_file

    model = create_model("phnet-lite", enc_sizes=TINY)
    good = save_weights(model, tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.safetensors").write_text("not weights at all\n")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    save_file({"a": torch.zeros(2)}, str(tmp_path / "badcfg.safetensors"),
              metadata={"vidharm.config": json.dumps({"arch": "unet"})})
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd.pop("encoder.0.0.bias")
    save_file(sd, str(tmp_path / "missing.safetensors"),
              metadata={"vidharm.config": json.dumps(model.config)})
    torch.save(model.state_dict(), tmp_path / "model.pth")
    expect = {"cut": "cannot read", "text": "cannot read", "plain": "without a vidharm model config",
              "badcfg": "unusable model config", "missing": "1 missing key (encoder.0.0.bias)"}
    for name, words in expect.items():
        with pytest.raises(InputError) as ei:
            load_weights(tmp_path / f"{name}.safetensors")
        assert words in _one_line_error(ei), name
    with pytest.raises(InputError) as ei:
        load_weights(tmp_path / "model.pth")
    assert "load_published" in _one_line_error(ei)


def test_model_table_names_configurations_and_shipped_weights(tmp_path, monkeypatch):
    """One table: each family registers its configurations (and shipped weights) next to its
    definition; "default" is phnet-grid; a missing shipped file is one line."""
    from vidharm.errors import ConfigError
    from vidharm.models import (DEFAULT_MODEL, _registry, build_model, list_models,
                                shipped_names, shipped_weights)
    assert shipped_names() == ["default", "fmm", "phnet-grid", "phnet-lite"]
    assert set(shipped_names()) - {"default"} <= set(list_models())
    assert DEFAULT_MODEL == "phnet-grid"
    assert shipped_weights("default") == shipped_weights("phnet-grid")
    for name in shipped_names():
        assert shipped_weights(name).is_file(), name
    with pytest.raises(InputError, match="no shipped weights for 'phnet-lite-s'"):
        shipped_weights("phnet-lite-s")
    monkeypatch.setattr(_registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(InputError, match="is missing"):
        shipped_weights("fmm")
    with pytest.raises(ConfigError, match="unknown model architecture 'unet'.*fmm, grid, phnet"):
        build_model({"arch": "unet", "enc_sizes": [3, 8]})
    with pytest.raises(ConfigError, match="lacks grid_count"):
        build_model({"arch": "phnet", "enc_sizes": TINY})
