#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine (fast when everything is already there):
#   1. Debian packages: FFmpeg 5.1 dev libraries, libclang, pkg-config, the ffmpeg CLI,
#      rtsp-server-perl and Chromium with its WebDriver (tests), Redis and PostgreSQL (used only
#      when none answers, see services.sh);
#   2. a project-local venv (.venv) with torch==2.13.0, the libtorch that tch 0.26 links, and
#      onnxruntime==1.32.0, whose library the CPU backend loads at run time;
#   3. YOLOX-Nano converted with a real batch dimension (models/: ONNX for the CPU, TorchScript
#      fp32 and bf16 for CUDA, and the reference model `bench` compares against);
#   4. the release build (libtorch's directory is embedded as an rpath: no LD_LIBRARY_PATH needed).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
ONNXRUNTIME_VERSION=1.32.0
TORCHVISION_VERSION=0.28.0   # onnx2torch imports it; pinned to the torch release it belongs to
MODEL_SHA256=695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14
MODEL_UPSTREAM=https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx
MODEL_LOCAL=../shared/assets/models/yolox_nano.onnx
MODEL_OUT=models/yolox_nano.onnx   # written last: its presence means the conversion finished

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# Rust comes from rustup (Debian's rustc is too old for the crates used here).
if ! command -v cargo >/dev/null; then
  say "cargo not found: install Rust >= 1.90 with rustup (https://rustup.rs) and run again"; exit 1
fi

# --- 1. Debian packages -------------------------------------------------------------------------
packages=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev
          libclang-dev clang pkg-config ffmpeg rtsp-server-perl redis-server postgresql python3-venv curl
          docker-compose chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. Python venv with libtorch ---------------------------------------------------------------
if ! .venv/bin/python -c "import torch, onnx, onnx2torch, torchvision; assert torch.__version__.split('+')[0] == '$TORCH_VERSION'" 2>/dev/null; then
  say "creating .venv with torch==$TORCH_VERSION (first time: a large download)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" onnx numpy pillow
  # --no-deps: neither may replace the pinned torch.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps onnx2torch "torchvision==$TORCHVISION_VERSION"
fi
if ! .venv/bin/python -c "import onnxruntime as o; assert o.__version__ == '$ONNXRUNTIME_VERSION'" 2>/dev/null; then
  say "installing onnxruntime==$ONNXRUNTIME_VERSION into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "onnxruntime==$ONNXRUNTIME_VERSION"
fi

# --- 3. The model -------------------------------------------------------------------------------
if [ ! -s "$MODEL_OUT" ] || [ scripts/convert_model.py -nt "$MODEL_OUT" ]; then
  mkdir -p models
  if [ -f "$MODEL_LOCAL" ]; then
    onnx=$MODEL_LOCAL
  else
    onnx=models/upstream/yolox_nano.onnx
    mkdir -p models/upstream
    [ -f "$onnx" ] || { say "downloading $MODEL_UPSTREAM"; curl -fsSL -o "$onnx" "$MODEL_UPSTREAM"; }
  fi
  echo "$MODEL_SHA256  $onnx" | sha256sum -c --quiet - || { say "sha256 mismatch for $onnx"; exit 1; }
  say "converting $onnx into models/"
  rm -f "$MODEL_OUT"
  .venv/bin/python scripts/convert_model.py "$onnx" models
fi

# --- 4. Build -----------------------------------------------------------------------------------
say "building (release)"
PATH="$PWD/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 cargo build --release --locked --bin its-analytics
say "ready: target/release/its-analytics"
