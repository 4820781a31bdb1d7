"""The Qt resource bundle (.rcc) reader of scripts/fetch_training_data.py, on bundles built here."""
from __future__ import annotations

import shutil
import struct
import subprocess
import zlib

import pytest


def _fetch_module():
    from conftest import load_fetch_script
    return load_fetch_script("fetch_training_data_rcc")


f = _fetch_module()


def build_rcc(tree: dict, version: int = 3) -> bytes:
    """A binary Qt resource bundle holding ``tree``: {name: subtree dict | (bytes, zlib?)}.

    Layout: header, names, data, then the tree (nodes breadth-first, a directory's children
    consecutive, node 0 the root), the way ``rcc -binary`` lays it out.
    """
    names = bytearray()
    name_off: dict[str, int] = {}

    def name(n: str) -> int:
        if n not in name_off:
            name_off[n] = len(names)
            raw = n.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(raw) // 2, 0) + raw)
        return name_off[n]

    data = bytearray()
    nodes: list[bytes | None] = [None]          # node 0: the root, filled in below
    queue = [(0, "", tree)]
    stamp = b"\0" * 8 if version >= 2 else b""  # last-modified field (version >= 2)
    while queue:
        index, label, sub = queue.pop(0)
        first = len(nodes)
        children = sorted(sub.items())
        nodes.extend([None] * len(children))
        for k, (child, value) in enumerate(children):
            if isinstance(value, dict):
                queue.append((first + k, child, value))
                continue
            payload, compressed = value
            if compressed == "zstd":           # payload given already compressed
                stored, flag = payload, 0x04
            elif compressed:
                stored, flag = struct.pack(">I", len(payload)) + zlib.compress(payload), 0x01
            else:
                stored, flag = payload, 0
            off = len(data)
            data.extend(struct.pack(">I", len(stored)) + stored)
            nodes[first + k] = struct.pack(">IHHHI", name(child), flag, 0, 0, off) + stamp
        nodes[index] = struct.pack(">IHII", name(label) if index else 0, 0x02,
                                   len(children), first) + stamp
    header_size = 24 if version >= 3 else 20
    names_off = header_size
    data_off = names_off + len(names)
    tree_off = data_off + len(data)
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0x01)
    return header + bytes(names) + bytes(data) + b"".join(nodes)


TREE = {
    "top.txt": (b"plain bytes at the top", False),
    "gcompris": {
        "src": {
            "photo.webp": (bytes(range(256)) * 40, True),      # zlib-compressed entry
            "deeper": {"raw.bin": (b"\x00\x01qres\xff" * 3, False)},
        },
        "empty": {},
    },
}
EXPECTED = {
    "/top.txt": b"plain bytes at the top",
    "/gcompris/src/photo.webp": bytes(range(256)) * 40,
    "/gcompris/src/deeper/raw.bin": b"\x00\x01qres\xff" * 3,
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_rcc_names_and_bytes(version):
    entries = f.read_rcc(build_rcc(TREE, version))
    assert {e.path: e.data for e in entries} == EXPECTED
    assert all(e.error == "" for e in entries)
    flags = {e.path: e.flags for e in entries}
    assert flags["/gcompris/src/photo.webp"] == f.RCC_ZLIB
    assert flags["/top.txt"] == 0


def test_read_rcc_bad_entry_is_reported_not_fatal():
    blob = bytearray(build_rcc(TREE))
    # corrupt the zlib stream of the compressed entry: that entry fails, the others are read
    payload = bytes(range(256)) * 40
    stored = struct.pack(">I", len(payload)) + zlib.compress(payload)
    at = bytes(blob).index(stored)
    blob[at + 6:at + 12] = b"\xff" * 6
    entries = {e.path: e for e in f.read_rcc(bytes(blob))}
    assert entries["/gcompris/src/photo.webp"].data is None
    assert entries["/gcompris/src/photo.webp"].error.startswith("zlib")
    assert entries["/top.txt"].data == EXPECTED["/top.txt"]


def test_read_rcc_zstd_entry_decoded_or_reported():
    text = b"zstd entry " * 50
    zstd = shutil.which("zstd")
    frame = subprocess.run([zstd, "-q", "-c"], input=text, capture_output=True,
                           check=True).stdout if zstd else b"\x28\xb5\x2f\xfd not really"
    tree = {"a": {"z.txt": (frame, "zstd")}, "b.txt": (b"b", False)}
    entries = {e.path: e for e in f.read_rcc(build_rcc(tree))}
    assert entries["/b.txt"].data == b"b"
    z = entries["/a/z.txt"]
    assert z.flags == f.RCC_ZSTD
    if z.data is None:        # no decoder here (neither the zstandard module nor the zstd tool)
        assert z.error.startswith("zstd")
    else:
        assert z.data == text


def test_read_rcc_rejects_what_is_not_a_bundle():
    with pytest.raises(f.RccError, match="magic"):
        f.read_rcc(b"PK\x03\x04" + b"\0" * 40)
    blob = build_rcc(TREE)
    with pytest.raises(f.RccError):
        f.read_rcc(blob[:-10])          # the tree is cut short
    with pytest.raises(f.RccError, match="version"):
        f.read_rcc(b"qres" + struct.pack(">IIII", 9, 0, 0, 0) + b"\0" * 8)


def test_photo_check_tells_photos_from_graphics():
    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    photo = np.stack([yy * 0.5, xx * 0.4, (yy + xx) * 0.3], axis=2) + rng.normal(0, 6, (300, 400, 3))
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    graphic = np.full((300, 400, 3), 255, np.uint8)
    graphic[50:250, 100:300] = (0, 0, 200)
    small = photo[:200]

    def png(img):
        ok, buf = cv2.imencode(".png", img)
        return buf.tobytes()

    assert f.photo_check(png(photo)) is None
    assert f.photo_check(png(graphic)).startswith("graphic")
    assert f.photo_check(png(small)).startswith("short side")
    assert f.photo_check(b"not a picture") == "not decodable"
