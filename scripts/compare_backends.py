#!/usr/bin/env python3
"""Model-only frames/s of the CPU candidates on the same frames, in one process, interleaved.

Usage: compare_backends.py MODELS_DIR [--threads 2] [--batches 1,4,8] [--rounds 3]

Candidates: the reference TorchScript (as served before), the channels-last TorchScript, the same
with oneDNN graph fusion (LLGA: libtorch can switch it on, tch cannot without a C++ shim), bf16,
and ONNX Runtime. Each round times every candidate once per batch size, so drift on a noisy machine
spreads over all of them; the table gives each one's median and range over the rounds relative to
the reference of the same round. docs/PERFORMANCE.md, "Choosing the CPU backend", quotes it.
"""
import argparse
import os
import statistics
import time

import numpy as np
import onnxruntime as ort
import torch


def timed(run, frames, seconds=3.0):
    run(frames)  # warm-up (and, for the fused graph, the profiling runs)
    run(frames)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(frames)
        n += 1
    return n * len(frames) / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("models")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,4,8")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch._C._jit_set_profiling_executor(False)

    def torchscript(file, fused=False):
        module = torch.jit.load(os.path.join(a.models, file))

        def run(frames):
            # Fusion works through the profiling executor; the plain one serves the others.
            torch._C._jit_set_profiling_executor(fused)
            torch.jit.enable_onednn_fusion(fused)
            with torch.no_grad():
                return module(torch.from_numpy(frames))

        return run

    def onnxruntime(spinning):
        options = ort.SessionOptions()
        options.intra_op_num_threads = a.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        path = os.path.join(a.models, "yolox_nano.onnx")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda frames: session.run(None, {"frames": frames})

    candidates = {
        "reference (TorchScript fp32, before)": torchscript("yolox_nano.reference.pt"),
        "TorchScript fp32 channels-last": torchscript("yolox_nano.torchscript.pt"),
        "TorchScript fp32 channels-last + oneDNN fusion": torchscript("yolox_nano.torchscript.pt", fused=True),
        "TorchScript bf16 channels-last": torchscript("yolox_nano.bf16.pt"),
        "TorchScript bf16 channels-last + oneDNN fusion": torchscript("yolox_nano.bf16.pt", fused=True),
        "ONNX Runtime fp32": onnxruntime(spinning=True),
        "ONNX Runtime fp32, no spinning": onnxruntime(spinning=False),
    }
    rng = np.random.default_rng(0)
    batches = [int(b) for b in a.batches.split(",")]
    ratios = {(c, b): [] for c in candidates for b in batches}
    fps = {(c, b): [] for c in candidates for b in batches}
    for r in range(a.rounds):
        for b in batches:
            frames = rng.integers(0, 256, (b, 416, 416, 3), dtype=np.uint8)
            base = None
            for name, run in candidates.items():
                f = timed(run, frames)
                base = base or f
                fps[(name, b)].append(f)
                ratios[(name, b)].append(f / base)
        print(f"round {r + 1} done", flush=True)
    print(f"\nthreads {a.threads}, {a.rounds} rounds; frames/s median (ratio to the reference: median, min-max)")
    print("| candidate | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("| --- |" + " --- |" * len(batches))
    for name in candidates:
        cells = []
        for b in batches:
            rs = ratios[(name, b)]
            cells.append(f"{statistics.median(fps[(name, b)]):.0f} ({statistics.median(rs):.2f}x, {min(rs):.2f}-{max(rs):.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
