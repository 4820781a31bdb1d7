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
