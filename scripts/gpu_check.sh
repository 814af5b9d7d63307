#!/usr/bin/env bash
# The GPU check: one run on a GPU host (no Rust, no FFmpeg libraries; its PyTorch under
# /opt/torch/.venv) of the bundle made by scripts/gpu_bundle.sh, carried as gpu/bundle. Under ten
# minutes in all: every step has a timeout, and a step that would pass the overall budget
# (GPU_CHECK_BUDGET_S, 540 s) is skipped. Results go to $OUT (results.json, results.md, each
# step's output and log):
#   env           CUDA visible to the host's torch, device name, driver (NVML)
#   frames        raw BGR24 frames of the overpass clip for raw:// cameras (cv2)
#   model_bench   the model alone per batch size (8, 16, 32, 64): frames/s and NVML memory/frame
#   cameras_*     bench --cameras N --fps 30 --source raw://... for N = 1, 8, 32, 100 (batch 32),
#                 then 100 cameras at batches 8, 16 and 64: frames/s, capture-to-event p50/p99
#   oom           a filler process holds most free device memory while 100 cameras run with batch
#                 64; the run must survive by halving the batch (its log lines say so)
#   torch_check   the model through the host's PyTorch alone (scripts/gpu_torch_check.py)
#
# Stand-in runs (a machine without a GPU), all optional:
#   GPU_CHECK_TORCH_LIB   libtorch's lib directory (default: the host's torch, via GPU_CHECK_PYTHON)
#   GPU_CHECK_PYTHON      Python with torch (default /opt/torch/.venv/bin/python)
#   GPU_CHECK_DEVICE      device.kind (default cuda); with cpu the out-of-memory is injected
#                         (faults.oom_at_batch) instead of forced by a filler
#   GPU_CHECK_CAMERAS, GPU_CHECK_SWEEP, GPU_CHECK_BATCH, GPU_CHECK_MODEL_BATCHES, GPU_CHECK_FPS,
#   GPU_CHECK_DURATION_S, GPU_CHECK_WARM_UP_S, GPU_CHECK_MODEL_FRAMES, GPU_CHECK_RAW_FRAMES: sizes
#   GPU_CHECK_BENCH       the command that runs `bench` (default: the bundle's binary)
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET_S:-540}
OUT=${OUT:-$PWD/gpu/out}
mkdir -p "$OUT"
BUNDLE=${GPU_CHECK_BUNDLE:-gpu/bundle}
PY=${GPU_CHECK_PYTHON:-/opt/torch/.venv/bin/python}
KIND=${GPU_CHECK_DEVICE:-cuda}
CAMERAS=${GPU_CHECK_CAMERAS:-1 8 32 100}
SWEEP=${GPU_CHECK_SWEEP:-8 16 64}
BATCH=${GPU_CHECK_BATCH:-32}
MODEL_BATCHES=${GPU_CHECK_MODEL_BATCHES:-8,16,32,64}
FPS=${GPU_CHECK_FPS:-30}
DURATION=${GPU_CHECK_DURATION_S:-15}
WARM_UP=${GPU_CHECK_WARM_UP_S:-5}
MODEL_FRAMES=${GPU_CHECK_MODEL_FRAMES:-2048}
RAW_FRAMES=${GPU_CHECK_RAW_FRAMES:-600}
WORK=$(mktemp -d /tmp/its-gpu-check.XXXXXX)
FILLER=
cleanup() {
    [[ -n $FILLER ]] && kill "$FILLER" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

BIN=$BUNDLE/its-analytics
if [[ -z ${GPU_CHECK_TORCH_LIB:-} ]]; then
    GPU_CHECK_TORCH_LIB=$(timeout 60 "$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
fi
export LD_LIBRARY_PATH=$GPU_CHECK_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ITS__DEVICE__KIND=$KIND ITS__CAMERAS__MEDIA_DIR=$WORK RUST_LOG=${RUST_LOG:-info}
read -r -a BENCH <<<"${GPU_CHECK_BENCH:-$BIN --config $BUNDLE/gpu.toml bench}"

STEPS=()
# step NAME SECONDS COMMAND...: stdout to $OUT/NAME.out, stderr to $OUT/NAME.log, at most SECONDS
# (less if the budget is shorter); skipped when under 10 s of the budget are left.
step() {
    local name=$1 limit=$2 rc started=$SECONDS
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        echo "skip $name: the budget is spent"
        STEPS+=("{\"step\":\"$name\",\"rc\":\"skipped\",\"seconds\":0}")
        return 1
    fi
    echo "== $name (at most ${limit}s)"
    timeout -k 5 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"
    rc=$?
    echo "   exit $rc after $((SECONDS - started))s"
    STEPS+=("{\"step\":\"$name\",\"rc\":$rc,\"seconds\":$((SECONDS - started))}")
    return $rc
}

# (a) CUDA as the host's torch sees it, and the libraries the binary loads (libtorch_cuda among them).
step env 60 "$PY" scripts/gpu_check.py env && cp "$OUT/env.out" "$OUT/env.json"
step ldd 20 ldd "$BIN"
cat "$OUT/env.json" 2>/dev/null

# Raw frames for the cameras (kept out of the bundle: 230 KB a frame).
FRAMES=$WORK/overpass.bgr
step frames 90 "$PY" scripts/gpu_check.py frames "$BUNDLE/overpass_video03.avi" "$FRAMES" "$RAW_FRAMES"
read -r W H < <("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["width"], d["height"])' \
    "$OUT/frames.out" 2>/dev/null || echo "320 240")
SOURCE="raw://$FRAMES?width=$W&height=$H&fps=$FPS"

# (b) and (d): the model alone per batch size, with NVML's memory per frame.
step model_bench 150 "$BIN" --config "$BUNDLE/gpu.toml" model-bench --batch "$MODEL_BATCHES" \
    --frames "$MODEL_FRAMES" --json && cp "$OUT/model_bench.out" "$OUT/model_bench.json"

# (c) N cameras at FPS through the whole pipeline.
trial() {
    local n=$1 batch=$2 name=cameras_n$1_b$2
    ITS__BATCHING__MAX_BATCH=$batch step "$name" $((DURATION + WARM_UP + 60)) "${BENCH[@]}" --cameras "$n" \
        --fps "$FPS" --duration-s "$DURATION" --warm-up-s "$WARM_UP" --source "$SOURCE" --json &&
        "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d.setdefault("batch", int(sys.argv[3]));
json.dump(d, open(sys.argv[2], "w"), indent=1)' "$OUT/$name.out" "$OUT/$name.json" "$batch"
}
for n in $CAMERAS; do
    trial "$n" "$BATCH"
done

# (e) A forced out-of-memory that batch halving survives.
# The most cameras, and batches given 40 ms to fill: batches of 64 do form.
oom_cameras=$(echo "$CAMERAS" | awk '{print $NF}')
if [[ $KIND == cpu ]]; then
    how="injected: faults.oom_at_batch = 5, oom_times = 3 (no CUDA device: a stand-in run)"
    export ITS__FAULTS__OOM_AT_BATCH=5 ITS__FAULTS__OOM_TIMES=3
else
    # Leave the service what a CUDA context needs plus a batch of 32 (measured above), so that a
    # batch of 64 cannot fit; frame_memory_mb = 1 keeps the batch sizer from capping the batch by
    # NVML's free memory first (the out-of-memory must really happen).
    per32=$("$PY" -c 'import json,sys; b=[b for b in json.load(open(sys.argv[1]))["batches"] if b["batch"]==32];
print(int(b[0]["memory_mib"] or 0) if b else 0)' "$OUT/model_bench.json" 2>/dev/null || echo 0)
    ((${per32:-0} > 0)) || per32=300
    leave=${GPU_CHECK_OOM_LEAVE_MIB:-$((700 + per32))}
    how="filler: another process holds all but ${leave} MiB of device memory; batching.max_batch = 64"
    timeout -k 5 300 "$PY" scripts/gpu_check.py fill "$leave" "$WORK/filled" 290 >"$OUT/filler.log" 2>&1 &
    FILLER=$!
    for _ in $(seq 120); do
        [[ -s $WORK/filled ]] && break
        sleep 0.5
    done
    how="$how (free after filling: $(cat "$WORK/filled" 2>/dev/null || echo '?') MiB)"
    export ITS__BATCHING__FRAME_MEMORY_MB=1
fi
ITS__BATCHING__MAX_BATCH=64 ITS__BATCHING__MAX_WAIT_MS=40 step oom $((DURATION + WARM_UP + 60)) "${BENCH[@]}" --cameras "$oom_cameras" --fps "$FPS" \
    --duration-s "$DURATION" --warm-up-s "$WARM_UP" --source "$SOURCE" --json
oom_rc=$?
[[ -n $FILLER ]] && kill "$FILLER" 2>/dev/null
FILLER=
unset ITS__FAULTS__OOM_AT_BATCH ITS__FAULTS__OOM_TIMES ITS__BATCHING__FRAME_MEMORY_MB
halvings=$(grep -c "device out of memory; retrying the same frames in smaller batches" "$OUT/oom.log")
"$PY" -c 'import json,sys
rc, halvings, how, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    trial = json.load(open(out))
except Exception:
    trial = {}
fps = trial.get("frames_per_s", 0)
json.dump({"how": how, "rc": rc, "halvings": halvings, "frames_per_s": fps,
           "survived": rc == 0 and halvings > 0 and fps > 0, "trial": trial}, open(sys.argv[5], "w"), indent=1)' \
    "$oom_rc" "${halvings:-0}" "$how" "$OUT/oom.out" "$OUT/oom.json"

# (c) continued: batch sizes 8 to 64 at the largest camera count, as the budget allows.
largest=$(echo "$CAMERAS" | awk '{print $NF}')
for batch in $SWEEP; do
    trial "$largest" "$batch"
done

# The same model through PyTorch alone (batch equivalence, throughput, peak memory), as before.
if [[ $KIND != cpu ]]; then
    step torch_check 120 "$PY" scripts/gpu_torch_check.py "$BUNDLE/yolox_nano.torchscript.pt" \
        "$BUNDLE/overpass_video03.avi" "$OUT/torch_check.json"
fi

(IFS=,; echo "[${STEPS[*]}]") >"$OUT/steps.json"
"$PY" scripts/gpu_check.py summarize "$OUT"
echo "total $((SECONDS - START))s; results in $OUT"
