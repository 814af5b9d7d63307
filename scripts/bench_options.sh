#!/usr/bin/env bash
# The inference options a user can turn on, each measured on this machine: model-only frames/s
# (`model-bench`, batch 4 as one camera's pipeline forms), the offline pipeline's frames/s and the
# counts from `evaluate` on the ground-truth manifest (the overpass clip, every frame).
# docs/PERFORMANCE.md, "Inference options", quotes its table. `bench` compares the default with
# the reference model in one process; this script compares the options with each other.
#
#   scripts/bench_options.sh [ROUNDS]      (default 1; needs scripts/setup.sh first)
#
# Options are set as ITS__SECTION__KEY variables, exactly as a user would.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
bin=target/release/its-analytics
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

options=(
  "ONNX Runtime fp32, 416, overview (default)|"
  "no overview (model.overview = false)|ITS__MODEL__OVERVIEW=false"
  "TorchScript fp32 channels-last|ITS__MODEL__PATH=models/yolox_nano.torchscript.pt"
  "TorchScript bf16 channels-last|ITS__MODEL__PATH=models/yolox_nano.bf16.pt"
  "ONNX Runtime, input 320|ITS__MODEL__INPUT_SIZE=320"
  "ONNX Runtime, input 512|ITS__MODEL__INPUT_SIZE=512"
  "reference TorchScript (before)|ITS__MODEL__PATH=models/yolox_nano.reference.pt"
)

echo "| option | round | model only frames/s (batch 4) | pipeline frames/s (evaluate) | counts y150 in (27) / y200 in (27) / left (17) / right (10) / y150 out (0) | mean abs error |"
echo "| --- | --- | --- | --- | --- | --- |"
for round in $(seq "$rounds"); do
  for i in "${!options[@]}"; do
    name=${options[$i]%%|*}
    vars=${options[$i]#*|}
    env $vars "$bin" model-bench --batch 4 --frames 400 --json >"$out/bench.json" 2>/dev/null
    env $vars "$bin" evaluate --json >"$out/eval.json" 2>/dev/null
    python3 - "$name" "$round" "$out/bench.json" "$out/eval.json" <<'PY'
import json, sys
name, round_, bench, ev = sys.argv[1:]
b = json.load(open(bench))["batches"][0]
e = json.load(open(ev))
rows = {(t["line"], t["direction"]): t["predicted"] for c in e["clips"] for t in c["truths"]}
counts = " / ".join(str(rows.get(k, "?")) for k in
                    [("y150", "in"), ("y200", "in"), ("y150-left", "in"), ("y150-right", "in"), ("y150", "out")])
a = e["aggregate"]
print(f"| {name} | {round_} | {b['frames_per_s']:.1f} | {a['processing_fps']:.1f} | {counts} "
      f"| {a['mean_abs_error']:.2f} |", flush=True)
PY
  done
done
