#!/usr/bin/env bash
# The prepared run for a lent GPU machine, live part: the CUDA tests that need no training
# pack, then the live engine at 1080p60 with the gpu-1080p60 profile (phnet-grid on CUDA on
# every frame) in bf16 and in fp16, in one call of about 3 minutes.
#
# That machine has torch with CUDA, OpenCV, numpy, absl-py, flatbuffers and matplotlib, but no
# PyAV, no MediaPipe and no package registry, and takes at most 64 MiB of the tree. So the
# camera is bench/bench_live.py's MJPG stand-in (OpenCV decodes each frame), and MediaPipe
# travels in pieces. First, here (about 30 MiB, in gpu-kit/live):
#
#   bash scripts/gpu_live.sh --pack
#
# then run `bash scripts/gpu_live.sh` there, carrying gpu-kit/live. What comes back in $OUT:
# the log. For a dry run on a CPU machine: PY=<python> DEVICE=cpu S_BF16=5 S_BF16_CV4=0 S_FP16=0.
set -uo pipefail
cd "$(dirname "$0")/.."
K=gpu-kit/live
if [ "${1:-}" = "--pack" ]; then
  set -e
  PY=${PY:-.venv/bin/python}
  C=$($PY -c "from vidharm import assets; print(assets.cache_dir())")
  V=$($PY -c "import mediapipe; print(mediapipe.__version__)")
  W=$(mktemp -d)
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$W" "mediapipe==$V"
  rm -rf "$K"; mkdir -p "$K/gl" "$K/cache"
  # the segmentation models, the sample clip, its background and the demo backgrounds
  for a in selfie-general selfie-landscape sample-clip sample-background scene-snow scene-sunrise; do
    f=$($PY -c "from vidharm import assets; print(assets.path('$a'))")
    r=${f#"$C"/}; mkdir -p "$K/cache/$(dirname "$r")"
    cp "$f" "$f.provenance.json" "$K/cache/$(dirname "$r")/"
  done
  # MediaPipe: the library xz-compressed (42 -> 28 MiB), the rest as a zip; the GL dispatch
  # libraries it links against (the GPU machine's image may lack them)
  unzip -q "$W"/mediapipe-*.whl -d "$W/mp"
  xz -9 -T2 -c "$W/mp/mediapipe/tasks/c/libmediapipe.so" > "$K/libmediapipe.so.xz"
  rm "$W/mp/mediapipe/tasks/c/libmediapipe.so"
  (cd "$W/mp" && zip -q -r -9 "$OLDPWD/$K/mediapipe-rest.zip" .)
  for l in libEGL.so.1 libGLESv2.so.2 libGLdispatch.so.0; do
    cp -L "$(ldconfig -p | awk -v l="$l" '$1 == l && /x86-64/ {print $NF; exit}')" "$K/gl/"
  done
  rm -rf "$W"; du -sh "$K"; exit 0
fi
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_live.log") 2>&1
[ -f "$K/libmediapipe.so.xz" ] || { echo "error: $K is missing -- make it first (bash scripts/gpu_live.sh --pack) and carry it"; exit 2; }
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
mkdir -p "$SITE"
$PY - "$K" "$SITE" <<'EOF' || exit 2
import lzma, shutil, sys, zipfile
kit, site = sys.argv[1:]
zipfile.ZipFile(f"{kit}/mediapipe-rest.zip").extractall(site)
with lzma.open(f"{kit}/libmediapipe.so.xz") as src, \
        open(f"{site}/mediapipe/tasks/c/libmediapipe.so", "wb") as dst:
    shutil.copyfileobj(src, dst)
print("mediapipe unpacked into", site)
EOF
# vidharm is not installed there: its plugins package and entry points, as pip would make them
ln -sfn "$PWD/plugins" "$SITE/vidharm_plugins"
D=$SITE/vidharm-0.0.0.dist-info
mkdir -p "$D"
printf 'Metadata-Version: 2.1\nName: vidharm\nVersion: 0.0.0\n' > "$D/METADATA"
printf '[vidharm.plugins]\nvidharm-builtins = vidharm_plugins\nvidharm-harmonizers = vidharm.harmonize:register\n' > "$D/entry_points.txt"
export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=$PWD/$K/gl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export VIDHARM_CACHE=$PWD/$K/cache
nvidia-smi -L 2>/dev/null || true
$PY -c "import torch, cv2, mediapipe; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available(), 'OpenCV', cv2.__version__, 'mediapipe', mediapipe.__version__)"
nproc; uptime
t0=$(date +%s)
if [ "${TESTS:-1}" = 1 ]; then
  $PY -m pytest -q -p no:cacheprovider tests/test_phnet.py::test_cuda_fp16_close_to_fp32 \
    tests/test_grid_harmonizers.py::test_shipped_grid_on_cuda_close_to_the_cpu
  echo "tests: exit $? after $(( $(date +%s) - t0 )) s"
fi
B="$PY bench/bench_live.py --profile gpu-1080p60 --harmonizer phnet-grid --sizes 1080 --mjpg 60 --device ${DEVICE:-cuda}"
run() {   # seconds, what, bench options
  local s=$1 what=$2; shift 2
  [ "$s" = 0 ] && return
  echo "== live 1080p60: $what, $s s"
  $B --seconds "$s" "$@"
  echo "   exit $? after $(( $(date +%s) - t0 )) s"
}
run "${S_BF16:-40}" "phnet-grid on every frame, bf16, OpenCV on 1 thread (as vidharm run)" --precision bf16
run "${S_BF16_CV4:-30}" "the same, OpenCV on 4 threads" --precision bf16 --cv-threads 4
run "${S_FP16:-20}" "phnet-grid on every frame, fp16" --precision fp16
run "${S_NONE:-15}" "no harmonizer (the rest of the pipeline alone)" --harmonizer none
echo "done after $(( $(date +%s) - t0 )) s"
