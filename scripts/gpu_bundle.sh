#!/usr/bin/env bash
# Makes gpu/bundle/ (git-ignored): what a GPU host with no Rust, no FFmpeg libraries and its own
# PyTorch (2.11, CUDA 13, under /opt/torch/.venv) needs to run `scripts/gpu_check.sh`:
#   its-analytics   built without FFmpeg (`--no-default-features`: raw:// and sim:// cameras only),
#                   against the headers of the host's libtorch, stripped; its libtorch is found at
#                   run time through LD_LIBRARY_PATH (the rpath is a RUNPATH, which it overrides)
#   yolox_nano.torchscript.pt, overpass_video03.avi (raw frames are made from it there with cv2),
#   gpu.toml        the configuration the check layers its settings over.
#
# Why not the binary of `cargo build`: tch's C++ glue is compiled against libtorch's headers and
# crashes (SIGSEGV at the first model load) with another minor version's libraries. So the glue is
# built against the host's version (GPU_TORCH_VERSION, default 2.11.0): its wheel is downloaded
# once (headers and libraries, into target-gpu/), tch's torch-sys is patched in from a copy whose
# generated wrappers for operations that version lacks are stubbed (`scripts/gpu_torch_sys.py`,
# 15 of them for 2.11; the service calls none), in a target directory of its own (`target-gpu`).
# Cargo.lock is restored afterwards (the patch is never committed).
#
# Usage: scripts/gpu_bundle.sh   (then, on the host: bash scripts/gpu_check.sh, carrying gpu/bundle)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=${GPU_TORCH_VERSION:-2.11.0}
TARGET=$ROOT/target-gpu
TORCH=$TARGET/libtorch-$VERSION/site/torch
BUNDLE=$ROOT/gpu/bundle
CLIP=${GPU_BUNDLE_CLIP:-$ROOT/../shared/assets/video/overpass_video03.avi}
MODEL=${GPU_BUNDLE_MODEL:-$ROOT/models/yolox_nano.torchscript.pt}
PY=$ROOT/.venv/bin/python
[[ -x $PY ]] || { echo "no .venv: run scripts/setup.sh first" >&2; exit 1; }
[[ -f $MODEL ]] || { echo "no model at $MODEL: run scripts/setup.sh first" >&2; exit 1; }
[[ -f $CLIP ]] || { echo "no clip at $CLIP" >&2; exit 1; }
mkdir -p "$TARGET"

# libtorch of the host's version: headers and libraries from its wheel. libtorch_cuda's own
# dependencies (cuDNN, cuBLAS, ...) resolve through $ORIGIN/../../nvidia at link time: the
# project venv's CUDA 13 libraries stand in for the host's.
if [[ ! -f $TORCH/lib/libtorch_cuda.so || ! -d $TORCH/include ]]; then
    wheels=$TARGET/wheels
    mkdir -p "$wheels"
    ls "$wheels"/torch-"$VERSION"-*.whl >/dev/null 2>&1 ||
        "$PY" -m pip download --quiet "torch==$VERSION" --no-deps -d "$wheels"
    wheel=$(ls "$wheels"/torch-"$VERSION"-*.whl | head -1)
    rm -rf "$TARGET/libtorch-$VERSION"
    mkdir -p "$TARGET/libtorch-$VERSION/site"
    unzip -q "$wheel" 'torch/lib/*' 'torch/include/*' -d "$TARGET/libtorch-$VERSION/site"
    ln -sfn "$("$PY" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')/nvidia" \
        "$TARGET/libtorch-$VERSION/site/nvidia"
fi

# torch-sys, patched in from a copy (fresh each time, then stubbed from the first build's errors).
REGISTRY_COPY=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/torch-sys-0.26.0 | head -1)
rm -rf "$TARGET/torch-sys"
cp -r "$REGISTRY_COPY" "$TARGET/torch-sys"
cp Cargo.lock "$TARGET/Cargo.lock.saved"
trap 'cp "$TARGET/Cargo.lock.saved" "$ROOT/Cargo.lock"' EXIT
build() {
    env -u LIBTORCH_USE_PYTORCH LIBTORCH="$TORCH" LIBTORCH_BYPASS_VERSION_CHECK=1 CARGO_TARGET_DIR="$TARGET" \
        cargo build --release --no-default-features --bin its-analytics \
        --config "patch.crates-io.torch-sys.path=\"$TARGET/torch-sys\"" >"$TARGET/build.log" 2>&1
}
if ! build; then
    grep -q "torch_api_generated.cpp:[0-9]*:[0-9]*: error" "$TARGET/build.log" ||
        { tail -40 "$TARGET/build.log" >&2; exit 1; }
    echo "stubbed $(python3 scripts/gpu_torch_sys.py "$TARGET/torch-sys" "$TARGET/build.log") libtch wrappers" \
        "libtorch $VERSION lacks"
    build || { tail -40 "$TARGET/build.log" >&2; exit 1; }
fi

BIN=$TARGET/release/its-analytics
if readelf -d "$BIN" | grep -E 'NEEDED.*lib(av|sw)'; then
    echo "the bundle's binary links FFmpeg" >&2
    exit 1
fi
readelf -d "$BIN" | grep -q 'NEEDED.*libtorch_cuda' || { echo "libtorch_cuda is not linked" >&2; exit 1; }

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"
strip -o "$BUNDLE/its-analytics" "$BIN"
cp "$MODEL" "$BUNDLE/yolox_nano.torchscript.pt"
cp "$CLIP" "$BUNDLE/overpass_video03.avi"
cat >"$BUNDLE/gpu.toml" <<'EOF'
# The GPU check's settings (scripts/gpu_check.sh overrides some with ITS__ variables).
[model]
path = "gpu/bundle/yolox_nano.torchscript.pt"

[device]
kind = "cuda"

[batching]
max_batch = 32
EOF
echo "torch $VERSION" >"$BUNDLE/TORCH_VERSION"
bundle=$(du -sm "$BUNDLE" | cut -f1)
repo=$(git ls-files -z | xargs -0 du -cm 2>/dev/null | tail -1 | cut -f1)
echo "gpu/bundle: ${bundle} MiB (the tracked files: ${repo} MiB; 64 MiB may travel in all)"
if ((bundle + repo > 56)); then
    echo "too large to travel with the repository" >&2
    exit 1
fi
