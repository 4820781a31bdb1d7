#!/usr/bin/env bash
# Install vidharm and run a fast test subset under each Python (pyenv), one venv per version.
# Run by hand, not in CI: outside 3.11 pip may have to fetch torch from PyPI, whose Linux
# wheels are the CUDA build (gigabytes).
#
#   bash scripts/test_pythons.sh                 # 3.10 3.11 3.12 3.13
#   bash scripts/test_pythons.sh 3.11 3.12       # some of them
#   TESTS="tests/test_config.py" bash scripts/test_pythons.sh 3.12
#   ALLOW_CUDA_TORCH=1 bash scripts/test_pythons.sh 3.12   # accept the CUDA torch download
#
# Per version: a venv in $VENVS/X.Y (default ~/.cache/vidharm/pythons), torch==2.13.0 first
# and pinned (as scripts/setup.sh does), then vidharm (editable) with its dependencies, then
# pytest on $TESTS. When torch would come as the CUDA build and ALLOW_CUDA_TORCH is not set,
# torch and the packages that require it (kornia, lion-pytorch) are left out and only the
# torch-free tests ($TESTS_NO_TORCH) run: the result says "partial". Logs: out/pythons/X.Y.log.
set -uo pipefail
cd "$(dirname "$0")/.."
VERSIONS=("$@")
[ ${#VERSIONS[@]} -eq 0 ] && VERSIONS=(3.10 3.11 3.12 3.13)
VENVS=${VENVS:-$HOME/.cache/vidharm/pythons}
# torch-free: config, CLI, PyAV (decode, rotation, audio, transcode), MediaPipe, OpenCV, doctor
TESTS_NO_TORCH=${TESTS_NO_TORCH:-"tests/test_config.py tests/test_color.py tests/test_imageio.py tests/test_video.py tests/test_segmentation.py tests/test_composite.py tests/test_transcode.py tests/test_cli.py tests/test_doctor.py"}
# with torch also --version through the CLI and the wheel installed into a fresh venv
TESTS=${TESTS:-"$TESTS_NO_TORCH tests/test_wheel.py"}
TORCH_FREE_SKIP="torch kornia lion-pytorch"
LOGS=out/pythons
mkdir -p "$LOGS" "$VENVS"
declare -A RESULT

interpreter() {   # the newest pyenv build of X.Y
  local root; root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  ls -d "$root"/versions/"$1".* 2>/dev/null | sort -V | tail -1 | sed 's|$|/bin/python|'
}

# the runtime dependencies from pyproject.toml, one per line (read with this checkout's 3.11+)
dependencies() {
  python3 - "$@" <<'EOF'
import re, sys
try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib
skip = set(sys.argv[1:])
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for d in deps:
    name = re.split(r"[<>=!~;\[ ]", d, 1)[0].lower()
    if name not in skip:
        print(d)
EOF
}

# does `pip install torch==2.13.0` here mean the CUDA build from PyPI? (a dry run: metadata only)
torch_needs_cuda_download() {
  local py=$1 report; report=$(mktemp)
  "$py" -m pip install -q --dry-run --ignore-installed --report "$report" "torch==2.13.0" >/dev/null 2>&1 || { rm -f "$report"; return 0; }
  "$py" - "$report" <<'EOF'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
cuda = [i["metadata"]["name"] for i in items if i["metadata"]["name"].lower().startswith(("nvidia-", "triton"))]
remote = [i["metadata"]["name"] for i in items if not i["download_info"]["url"].startswith("file:")]
if cuda:
    print(f"    pip would download {len(cuda)} CUDA packages ({', '.join(sorted(cuda)[:4])}, ...) with torch")
sys.exit(0 if cuda else 1)
EOF
  local rc=$?; rm -f "$report"; return $rc
}

for v in "${VERSIONS[@]}"; do
  log="$LOGS/$v.log"; : > "$log"
  start=$SECONDS
  py=$(interpreter "$v")
  if [ -z "$py" ] || [ ! -x "$py" ]; then
    echo "[$v] no interpreter (pyenv install $v)"; RESULT[$v]="not installed"; continue
  fi
  echo "[$v] $("$py" --version 2>&1) from $py"
  venv="$VENVS/$v"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv" >>"$log" 2>&1
  pip() { "$venv/bin/python" -m pip -q --disable-pip-version-check "$@" >>"$log" 2>&1; }
  pip install --upgrade pip setuptools wheel || true

  mode=full
  if "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    echo "    torch 2.13.0 already there"
  elif [ -z "${ALLOW_CUDA_TORCH:-}" ] && torch_needs_cuda_download "$venv/bin/python"; then
    echo "    -> leaving torch out (ALLOW_CUDA_TORCH=1 to download it); torch-free tests only"
    mode=partial
  else
    echo "    installing torch==2.13.0"
    pip install "torch==2.13.0" || { echo "    torch install failed (see $log)"; RESULT[$v]="FAIL: torch install"; continue; }
  fi

  echo "    installing vidharm and its dependencies"
  if [ $mode = full ]; then
    ok=1; pip install -e ".[test]" || ok=0
  else
    # shellcheck disable=SC2046
    ok=1; mapfile -t deps < <(dependencies $TORCH_FREE_SKIP)
    pip install "${deps[@]}" "pytest>=7" && pip install --no-deps -e . || ok=0
  fi
  if [ $ok = 0 ]; then
    echo "    install failed: $(grep -E 'ERROR|error:' "$log" | tail -2 | tr '\n' ' ')"
    RESULT[$v]="FAIL: install ($(( SECONDS - start ))s)"; continue
  fi
  "$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(torch|numpy|mediapipe|opencv[-a-z]*|av|pyvirtualcam|protobuf) ' | sed 's/^/    /'

  tests=$TESTS; [ $mode = partial ] && tests=$TESTS_NO_TORCH
  echo "    pytest $tests"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pytest -q -p no:cacheprovider $tests >>"$log" 2>&1
  rc=$?
  summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|^[0-9]+ (passed|failed)| (passed|failed|error)' "$log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
  if [ $rc = 0 ]; then RESULT[$v]="ok ($mode): $summary, $(( SECONDS - start ))s"
  else RESULT[$v]="FAIL ($mode): $summary, $(( SECONDS - start ))s (see $log)"; fi
  echo "    ${RESULT[$v]}"
done

echo
echo "Python   result"
fail=0
for v in "${VERSIONS[@]}"; do
  printf '%-8s %s\n' "$v" "${RESULT[$v]:-?}"
  case "${RESULT[$v]:-?}" in ok*) ;; *) fail=1 ;; esac
done
exit $fail
