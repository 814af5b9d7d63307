#!/usr/bin/env bash
# The inference options a user can turn on, each measured on this machine: model-only and
# pipeline frames/s from `bench` (the first row also times the reference model, the model as served
# before the ONNX Runtime backend, in the same process) and the counts from `evaluate` on the
# ground-truth manifest. docs/PERFORMANCE.md, "Inference options", quotes its table.
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
  "ONNX Runtime fp32, 416 (default)|"
  "TorchScript fp32 channels-last|ITS__MODEL__PATH=models/yolox_nano.torchscript.pt"
  "TorchScript bf16 channels-last|ITS__MODEL__PATH=models/yolox_nano.bf16.pt"
  "ONNX Runtime, input 320|ITS__MODEL__INPUT_SIZE=320"
  "ONNX Runtime, input 512|ITS__MODEL__INPUT_SIZE=512"
  "reference TorchScript (before)|ITS__MODEL__PATH=models/yolox_nano.reference.pt"
)

echo "| option | round | model only frames/s | pipeline frames/s | ratio | reference x | counts y150 in (27) / y200 in (27) / left (17) / right (10) / out (0) | mean abs error |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for round in $(seq "$rounds"); do
  for i in "${!options[@]}"; do
    name=${options[$i]%%|*}
    vars=${options[$i]#*|}
    reference=none
    [ "$i" -eq 0 ] && reference=models/yolox_nano.reference.pt
    env $vars "$bin" bench --reference "$reference" --json >"$out/bench.json" 2>/dev/null
    env $vars "$bin" evaluate --json >"$out/eval.json" 2>/dev/null || true
    python3 - "$name" "$round" "$out/bench.json" "$out/eval.json" <<'PY'
import json, sys
name, round_, bench, ev = sys.argv[1:]
b = json.load(open(bench))
e = json.load(open(ev))
rows = {(t["line"], t["direction"]): t["predicted"] for c in e["clips"] for t in c["truths"]}
counts = " / ".join(str(rows.get(k, "?")) for k in
                    [("y150", "in"), ("y200", "in"), ("y150-left", "in"), ("y150-right", "in"), ("y150", "out")])
ref = b.get("reference")
speedup = f"{ref['speedup']:.2f}x" if ref else "-"
print(f"| {name} | {round_} | {b['model_only_fps']:.1f} | {b['pipeline_fps']:.1f} | {b['ratio']:.2f} | {speedup} "
      f"| {counts} | {e['aggregate']['mean_abs_error']:.2f} |", flush=True)
PY
  done
done
