#!/usr/bin/env python3
"""Python side of `scripts/gpu_check.sh`, run with the GPU host's own Python (torch, cv2, NVML).

  env                           CUDA as the host's torch sees it, and NVML: JSON on stdout
  frames CLIP OUT N             the first N frames of CLIP (looped if shorter) as raw BGR24 into
                                OUT, for raw:// cameras; JSON {width, height, frames} on stdout
                                (cv2; the ffmpeg CLI where cv2 is missing, on a stand-in host)
  fill LEAVE_MIB READY SECONDS  holds CUDA memory until about LEAVE_MIB stay free, writes the free
                                MiB to READY, then waits (at most SECONDS) to be killed: the filler
                                that forces the service's batches out of memory
  summarize DIR                 DIR/results.json and DIR/results.md from the step outputs in DIR
"""
import json
import os
import subprocess
import sys
import time

MIB = 1 << 20


def env():
    report = {"python": sys.version.split()[0]}
    try:
        import torch

        report["torch"] = torch.__version__
        report["torch_cuda"] = torch.version.cuda
        report["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            free, total = torch.cuda.mem_get_info(0)
            report.update(device=props.name, total_mib=total // MIB, free_mib=free // MIB)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        report["torch_error"] = repr(e)
    try:
        import pynvml

        pynvml.nvmlInit()
        report["driver"] = pynvml.nvmlSystemGetDriverVersion()
        report["nvml_devices"] = pynvml.nvmlDeviceGetCount()
    except Exception as e:  # noqa: BLE001
        report["nvml_error"] = repr(e)
    print(json.dumps(report))


def frames(clip, out, n):
    n = int(n)
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is None:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
             "-of", "csv=p=0", clip], check=True, capture_output=True, text=True).stdout.strip().split(",")
        width, height = int(probe[0]), int(probe[1])
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", clip, "-frames:v", str(n),
                        "-f", "rawvideo", "-pix_fmt", "bgr24", out], check=True)
    else:
        cap = cv2.VideoCapture(clip)
        width, height, written = 0, 0, 0
        with open(out, "wb") as f:
            while written < n:
                ok, frame = cap.read()
                if not ok:
                    if written == 0:
                        sys.exit(f"cannot read {clip}")
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                height, width = frame.shape[:2]
                f.write(frame.tobytes())
                written += 1
    size = os.path.getsize(out)
    print(json.dumps({"width": width, "height": height, "frames": size // (3 * width * height)}))


def fill(leave_mib, ready, seconds):
    import torch

    leave = int(leave_mib) * MIB
    held = []
    chunk = 1024 * MIB
    while chunk >= 16 * MIB:
        free, _ = torch.cuda.mem_get_info(0)
        if free - chunk < leave:
            chunk //= 2
            continue
        try:
            held.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
        except RuntimeError:
            chunk //= 2
    free, _ = torch.cuda.mem_get_info(0)
    with open(ready, "w") as f:
        f.write(f"{free // MIB}\n")
    time.sleep(float(seconds))


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def summarize(directory):
    results = {
        "env": load(f"{directory}/env.json"),
        "model": load(f"{directory}/model_bench.json"),
        "cameras": [],
        "oom": load(f"{directory}/oom.json"),
        "steps": load(f"{directory}/steps.json"),
    }
    for name in sorted(os.listdir(directory)):
        if name.startswith("cameras_") and name.endswith(".json"):
            trial = load(f"{directory}/{name}")
            if trial is not None:
                trial["run"] = name[len("cameras_"):-len(".json")]
                results["cameras"].append(trial)
    results["cameras"].sort(key=lambda t: (t.get("batch", 0), t.get("cameras", 0)))
    with open(f"{directory}/results.json", "w") as f:
        json.dump(results, f, indent=2)

    md = ["# GPU check", ""]
    e = results["env"] or {}
    stand_in = any(t.get("stand_in") for t in results["cameras"])
    if stand_in:
        md += ["**Stand-in run: the camera figures are not measurements.**", ""]
    md.append(f"Device: {e.get('device', 'no CUDA device')} (torch {e.get('torch')}, CUDA "
              f"{e.get('torch_cuda')}, driver {e.get('driver')}); binary's device: "
              f"{(results['model'] or {}).get('device')}.")
    md += ["", "## Model only (grey frames, forward passes; memory from NVML)", "",
           "| batch | frames/s | ms/batch | device memory MiB | MiB/frame |", "|---|---|---|---|---|"]
    for b in (results["model"] or {}).get("batches", []):
        md.append(f"| {b['batch']} | {b['frames_per_s']:.0f} | {b['ms_per_batch']:.2f} | {b['memory_mib']} | "
                  f"{b['memory_per_frame_mib']} |")
    md += ["", "## Cameras (raw:// frames of the overpass clip, whole pipeline)", "",
           "| cameras | fps each | max batch | frames/s | dropped | capture->tracked p50 / p99 ms | "
           "capture->event p50 / p99 ms | events | 3,000 frames/s at p99 < 85 ms |",
           "|---|---|---|---|---|---|---|---|---|"]
    for t in results["cameras"]:
        lat = t.get("latency", {})
        fps = t.get("frames_per_s", 0.0)
        met = fps >= 3000 and lat.get("event_ms_p99", 1e9) < 85
        md.append(f"| {t.get('cameras')} | {t.get('fps')} | {t.get('batch')} | {fps:.0f} | {t.get('frames_dropped')} | "
                  f"{lat.get('frame_ms_p50', 0):.1f} / {lat.get('frame_ms_p99', 0):.1f} | "
                  f"{lat.get('event_ms_p50', 0):.1f} / {lat.get('event_ms_p99', 0):.1f} | {lat.get('events')} | "
                  f"{'yes' if met else 'no'} |")
    o = results["oom"] or {}
    md += ["", "## Forced out of memory", "",
           f"How: {o.get('how')}; survived: {o.get('survived')}; halvings logged: {o.get('halvings')}; "
           f"frames/s while short of memory: {o.get('frames_per_s')}; exit status {o.get('rc')}.", ""]
    md += ["## Steps", "", "| step | exit | seconds |", "|---|---|---|"]
    for s in results["steps"] or []:
        md.append(f"| {s['step']} | {s['rc']} | {s['seconds']} |")
    with open(f"{directory}/results.md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"env": env, "frames": frames, "fill": fill, "summarize": summarize}[command](*args)
