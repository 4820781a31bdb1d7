"""Third-party plugins: the example package is installed the way a user would install it,
and vidharm finds it through the ``vidharm.plugins`` entry-point group."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
           str(ROOT / "plugins/examples/vidharm-grayworld")]
    try:
        import setuptools  # noqa: F401
        cmd.insert(5, "--no-build-isolation")
    except ImportError:
        pass
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return target


def test_plugin_listed_and_usable(plugin_site, tmp_path):
    env = {"PYTHONPATH": str(plugin_site)}
    r = run_cli("plugins", env=env)
    assert r.returncode == 0, r.stderr
    assert "grayworld" in r.stdout
    for builtin in ("none", "stats", "mediapipe", "mp4", "null"):
        assert builtin in r.stdout

    from vidharm.imageio import save_image
    comp = np.zeros((60, 80, 3), np.uint8)
    comp[:] = (40, 60, 160)                       # blue room
    comp[10:50, 20:60] = (180, 150, 120)          # warm person
    mask = np.zeros((60, 80), np.uint8)
    mask[10:50, 20:60] = 255
    save_image(tmp_path / "c.png", comp)
    save_image(tmp_path / "m.png", mask)
    out = tmp_path / "o.png"
    r = run_cli("harmonize", tmp_path / "c.png", tmp_path / "m.png", "-o", out,
                "--harmonizer", "grayworld", env=env)
    assert r.returncode == 0, r.stderr
    from vidharm.imageio import load_image
    res = load_image(out)
    person = res[30, 40].astype(int)
    assert person[2] > person[0]                  # balanced toward the blue room
    assert np.array_equal(res[0, 0], comp[0, 0])  # background untouched


def test_unknown_plugin_name_one_line(tmp_path):
    from vidharm.imageio import save_image
    save_image(tmp_path / "c.png", np.zeros((8, 8, 3), np.uint8))
    save_image(tmp_path / "m.png", np.zeros((8, 8), np.uint8))
    r = run_cli("harmonize", tmp_path / "c.png", tmp_path / "m.png", "-o", tmp_path / "o.png",
                "--harmonizer", "stat")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown harmonizer 'stat'" in r.stderr
    assert "did you mean 'stats'" in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_broken_plugin_does_not_break_vidharm(tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vidharm.plugins]\nbroken = broken_plugin:register\n")
    (site / "broken_plugin.py").write_text(textwrap.dedent("""
        def register(reg):
            raise RuntimeError("boom")
    """))
    r = run_cli("plugins", env={"PYTHONPATH": str(site)})
    assert r.returncode == 0
    assert "stats" in r.stdout
    assert "plugin 'broken'" in r.stderr and "boom" in r.stderr


def _fake_dist(site, name, entry_points, modules):
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vidharm.plugins]\n" + entry_points)
    for mod, text in modules.items():
        (site / f"{mod}.py").write_text(textwrap.dedent(text))


def test_entry_point_naming_a_module_and_override_of_a_builtin(tmp_path):
    """vidharm's own parts come in through the same entry points, first: an entry point that
    names a module registers by importing it, and a third party's 'null' sink wins."""
    _fake_dist(tmp_path, "modplug", "mod = modplug\n", {"modplug": """
        from vidharm.registry import registry
        class LoudNull:
            '''replaces the built-in null sink'''
        registry.sinks.add("null", LoudNull)
        registry.sinks.add("modsink", LoudNull)
    """})
    code = ("from vidharm.registry import registry, plugin_errors\n"
            "print(registry.sinks.get('null').__name__, 'modsink' in registry.sinks,\n"
            "      'phnet-grid' in registry.harmonizers, plugin_errors)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["LoudNull", "True", "True", "[]"], r.stdout


def test_empty_registry_says_to_install_vidharm():
    """A source checkout whose entry points are missing still fails with one clear line."""
    from vidharm.errors import ConfigError
    from vidharm.registry import Registry
    with pytest.raises(ConfigError) as ei:
        Registry("widget").get("x")
    assert "unknown widget 'x'" in str(ei.value) and "pip install -e ." in ei.value.hint
