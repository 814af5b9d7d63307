#!/usr/bin/env python3
"""CUDA check of the converted model through PyTorch alone (`scripts/gpu_check.sh` runs it last).

Proves on the GPU what the Rust inference thread relies on: the TorchScript YOLOX-Nano with a real
batch dimension gives the same output for a batch of N as for N single frames, and measures
throughput and peak device memory per batch size (the input to VRAM-based batch sizing).

Usage: gpu_torch_check.py MODEL.pt [CLIP] [OUT.json]
"""
import json
import sys
import time

import torch

SIZE = 416


def letterbox(frame_bgr):
    import cv2  # opencv-python-headless

    h, w = frame_bgr.shape[:2]
    r = min(SIZE / w, SIZE / h)
    nw, nh = round(w * r), round(h * r)
    canvas = torch.full((SIZE, SIZE, 3), 114, dtype=torch.uint8)
    canvas[:nh, :nw] = torch.from_numpy(cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR))
    return canvas  # HWC: the models take uint8 [N, H, W, 3] and widen it themselves


def real_frames(clip, n):
    import cv2

    cap = cv2.VideoCapture(clip)
    frames = []
    index = 0
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        if index >= 300:
            frames.append(letterbox(frame))
        index += 1
    return torch.stack(frames)


def main():
    model_path = sys.argv[1]
    clip = sys.argv[2] if len(sys.argv) > 2 else None
    out_path = sys.argv[3] if len(sys.argv) > 3 else None
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    report = {"device": props.name, "total_memory_mib": props.total_memory // 2**20, "torch": torch.__version__}
    torch._C._jit_set_profiling_executor(False)
    model = torch.jit.load(model_path, map_location=dev).eval()

    with torch.no_grad():
        if clip:
            frames = real_frames(clip, 8).to(dev)
        else:
            frames = (torch.rand(8, SIZE, SIZE, 3, device=dev) * 255).to(torch.uint8)
        x = frames
        report["batch_equivalence"] = {}
        # cuDNN picks other convolution algorithms for other batch sizes; with TF32 (on by default
        # for convolutions on Ampere and later) their results differ in the low bits.
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            together = model(x)
            singles = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
            # A frozen module's weights are constants: a CPU copy is loaded, not moved.
            cpu = torch.jit.load(model_path, map_location="cpu")(x.cpu()).to(dev) if not tf32 else None
            diff = (together - singles).abs()
            confident = together[..., 4] > 0.3
            entry = {
                "frames": len(x),
                "real_frames": bool(clip),
                "shape": list(together.shape),
                "max_abs_diff_box_txty": diff[..., :2].max().item(),
                "max_abs_diff_box_twth": diff[..., 2:4].max().item(),
                "max_abs_diff_objectness": diff[..., 4].max().item(),
                "max_abs_diff_classes": diff[..., 5:].max().item(),
                "confident_rows": int(confident.sum().item()),
                "confident_rows_objectness_diff_over_0_01": int(((diff[..., 4] > 0.01) & confident).sum().item()),
            }
            if cpu is not None:
                entry["max_abs_diff_vs_cpu"] = (together - cpu).abs().max().item()
            report["batch_equivalence"]["tf32" if tf32 else "fp32"] = entry
            print(entry, flush=True)
        torch.backends.cudnn.allow_tf32 = False

        rows = []
        base = torch.cuda.memory_allocated(dev)
        for bs in [1, 4, 16, 32, 64, 128, 256]:
            batch = frames[torch.arange(bs) % len(frames)]
            torch.cuda.reset_peak_memory_stats(dev)
            for _ in range(3):
                model(batch)
            torch.cuda.synchronize()
            calls = max(5, 2048 // bs)
            t = time.perf_counter()
            for _ in range(calls):
                # u8 in, widened on the device by the model, as from the Rust inference thread
                y = model(batch)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
            rows.append({
                "batch": bs,
                "frames_per_s": round(calls * bs / dt, 1),
                "ms_per_batch": round(dt / calls * 1e3, 3),
                "peak_mib": round(peak, 1),
                "mib_per_frame": round(peak / bs, 2),
            })
            print(rows[-1], flush=True)
        report["throughput"] = rows
    text = json.dumps(report, indent=2)
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
