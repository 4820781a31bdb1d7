import pytest

from vidharm.config import available_profiles, load_config
from vidharm.errors import ConfigError


def test_builtin_profiles_load():
    names = available_profiles()
    assert {"call-cpu", "creator-quality"} <= set(names)
    for n in names:
        cfg = load_config(n)
        assert cfg.description


def test_flags_override_profile():
    cfg = load_config("call-cpu", {"harmonizer.name": "none", "mask.refine_radius": None})
    assert cfg.harmonizer.name == "none"
    assert cfg.mask.refine_radius == 10            # None = flag not given: profile value kept
    assert cfg.segmentation.model == "landscape"


def test_unknown_key_named(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('[mask]\nsmooth_stil = 0.3\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert "mask.smooth_stil" in e.value.one_line()
    p.write_text('[maks]\nx = 1\n')
    with pytest.raises(ConfigError, match="maks.x"):
        load_config(str(p))


def test_bad_type_and_syntax(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[harmonizer]\nstrength = "lots"\n')
    with pytest.raises(ConfigError, match="harmonizer.strength"):
        load_config(str(p))
    p.write_text('[harmonizer\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(p))


def test_unknown_profile_lists_choices():
    with pytest.raises(ConfigError) as e:
        load_config("video-kall")
    msg = e.value.one_line()
    assert "video-kall" in msg and "call-cpu" in msg and "\n" not in msg


def test_overrides_from_maps_short_names_and_checks_values():
    from vidharm.config import overrides_from
    over = overrides_from({"harmonizer": "none", "strength": "0.5", "fps": None,
                           "segmentation_model": "landscape", "live.size": "640x360"})
    assert over == {"harmonizer.name": "none", "harmonizer.strength": 0.5,
                    "segmentation.model": "landscape", "live.size": "640x360"}
    assert load_config("call-cpu", over).harmonizer.strength == 0.5
    with pytest.raises(ConfigError, match="unknown key 'colour' in command line"):
        overrides_from({"colour": 1}, "command line")
    with pytest.raises(ConfigError, match="mask.nope"):
        overrides_from({"mask.nope": 1})
    with pytest.raises(ConfigError) as e:
        overrides_from({"strength": 5}, "the control file")
    assert "'harmonizer.strength' in the control file" in e.value.one_line()
    assert "0.0 to 1.0" in e.value.one_line()


def test_x264_params_are_checked_before_any_work(tmp_path):
    """``output.x264_params``: a few whitelisted x264 settings over the preset, each value
    checked (x264 only logs a value it cannot parse and goes on); anything else is one
    ConfigError naming the item, before any work."""
    from vidharm.config import OutputConfig
    from vidharm.video import check_output_config
    assert load_config("call-cpu").output.x264_params.startswith("threads=1")
    p = tmp_path / "p.toml"
    for bad in ("threads=1;rm -rf /", "crf=0", "threads", "preset=slow:threads=2",
                "me=sideways", "threads=-1", "partitions=i8x8,all,x", "subme=99"):
        p.write_text(f'[output]\nx264_params = "{bad}"\n')
        with pytest.raises(ConfigError, match="x264_params") as e:
            load_config(str(p))
        named = e.value.one_line().split(" has '")[1].split("' -- ")[0]
        assert named in bad.split(":")                   # the offending item, as written
    p.write_text('[output]\nx264_params = "threads=2:me=dia:partitions=i8x8,i4x4:bframes=0"\n')
    cfg = load_config(str(p))
    check_output_config(cfg.output)
    check_output_config(OutputConfig(x264_params="threads=1:partitions=i8x8,i4x4"))


def test_harmonizer_precision_is_checked_and_reaches_the_network():
    """``harmonizer.precision`` (CUDA: bf16 / fp16 autocast or fp32) is refused when unknown,
    and on the CPU the network runs fp32 whatever it says."""
    from vidharm.api import WEIGHTS_DIR
    from vidharm.config import HarmonizerConfig
    from vidharm.registry import registry
    assert load_config("gpu-1080p60", {"harmonizer.precision": "fp16"}).harmonizer.precision == "fp16"
    with pytest.raises(ConfigError, match="harmonizer.precision") as e:
        load_config("gpu-1080p60", {"harmonizer.precision": "fp8"})
    assert "bf16" in e.value.one_line()
    h = registry.harmonizers.create("phnet-grid", HarmonizerConfig(
        device="cpu", precision="bf16", weights=str(WEIGHTS_DIR / "phnet-grid.safetensors")))
    assert h.net.precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        type(h.net)(h.net.model, device="cpu", precision="half")
