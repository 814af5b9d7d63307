#!/usr/bin/env python3
"""Convert YOLOX-Nano (ONNX, batch 1 and 416x416 baked in) into the model files the service runs.

Every file takes the same input: `frames`, uint8 `[N, H, W, 3]`, letterboxed BGR pixels in the
order the decoder's swscale writes them (interleaved, no planar copy), and gives `[N, anchors, 85]`.
N, H and W are free (H and W multiples of 32), so one file serves every batch and input size.

  yolox_nano.onnx            ONNX Runtime, the CPU backend: fp32
  yolox_nano.torchscript.pt  libtorch, the CUDA backend (and CPU): fp32, channels-last
  yolox_nano.bf16.pt         libtorch: bfloat16 weights (CPUs with AMX / AVX512-BF16, CUDA)
  yolox_nano.reference.pt    libtorch: the model exactly as served before the ONNX Runtime
                             backend (contiguous fp32), kept for `bench` and the equivalence test

The upstream ONNX flattens its three per-stride head maps with Reshape nodes whose target shape has
batch size 1 written into it, so the graph is cut before those reshapes (the heads `[N, 85, H, W]`
become its outputs) and flatten / concat / transpose are added again in a form that keeps N.

Usage: convert_model.py SRC.onnx OUT_DIR
Checks before saving: each file equals the original graph on one image, and a batch of 4 equals
four single-image runs, at 416x416, 320x320 and 416x320.
"""
import os
import sys

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from onnx2torch import convert

INPUT = 416
TOLERANCE = 1e-3  # fp32 files against the original graph (scores and pixel coordinates)
BF16_TOLERANCE = 8.0  # bf16 keeps ~3 significant digits: box coordinates move by a few pixels


def head_outputs(model: onnx.ModelProto) -> list[str]:
    """Names of the tensors that feed the final Reshape nodes (one per stride, in order)."""
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    if len(reshapes) != 3:
        raise SystemExit(f"expected 3 Reshape nodes in the YOLOX head, found {len(reshapes)}")
    return [n.input[0] for n in reshapes]


def batched_onnx(heads: onnx.ModelProto) -> onnx.ModelProto:
    """The heads graph with a uint8 NHWC input and the batch-keeping flatten / concat / transpose."""
    graph = heads.graph
    (images,) = [i for i in graph.input if i.name == "images"]
    channels = images.type.tensor_type.shape.dim[1].dim_value
    graph.input.remove(images)
    graph.input.append(helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", "H", "W", channels]))
    head_names = [o.name for o in graph.output]
    rows = heads.graph.output[0].type.tensor_type.shape.dim[1].dim_value  # 85
    del graph.output[:]
    del graph.value_info[:]  # shapes inferred at batch 1 would pin N
    graph.initializer.append(helper.make_tensor("its_flat_shape", TensorProto.INT64, [3], [0, rows, -1]))
    prologue = [
        helper.make_node("Transpose", ["frames"], ["its_frames_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["its_frames_nchw"], ["images"], to=TensorProto.FLOAT),
    ]
    flat = [f"its_flat_{i}" for i in range(len(head_names))]
    epilogue = [helper.make_node("Reshape", [h, "its_flat_shape"], [f]) for h, f in zip(head_names, flat)]
    epilogue += [
        helper.make_node("Concat", flat, ["its_rows_by_anchor"], axis=2),
        helper.make_node("Transpose", ["its_rows_by_anchor"], ["output"], perm=[0, 2, 1]),
    ]
    nodes = prologue + list(graph.node) + epilogue
    del graph.node[:]
    graph.node.extend(nodes)
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "A", rows]))
    onnx.checker.check_model(heads)
    return heads


class BatchedYolox(torch.nn.Module):
    """uint8 NHWC frames in; the heads in `dtype` and `memory_format`; float32 rows out."""

    def __init__(self, heads: torch.nn.Module, dtype: torch.dtype, channels_last: bool):
        super().__init__()
        self.heads = heads
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        images = frames.permute(0, 3, 1, 2)  # a view: NCHW indices over channels-last memory
        images = images.to(self.dtype) if self.channels_last else images.contiguous().to(self.dtype)
        maps = self.heads(images)
        flat = [m.flatten(2) for m in maps]  # [N, 85, H*W] each
        return torch.cat(flat, dim=2).permute(0, 2, 1).float().contiguous()  # [N, anchors, 85]


def torchscript(heads_path: str, dtype: torch.dtype, channels_last: bool) -> torch.jit.ScriptModule:
    heads = convert(onnx.load(heads_path)).eval().to(dtype)
    if channels_last:
        heads = heads.to(memory_format=torch.channels_last)
    model = BatchedYolox(heads, dtype, channels_last).eval()
    example = torch.randint(0, 256, (2, INPUT, INPUT, 3), dtype=torch.uint8)
    with torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(model, example).eval())


def original_output(session: ort.InferenceSession, frame: np.ndarray) -> np.ndarray:
    """The upstream graph on one uint8 HWC frame (416x416 only: its reshapes are fixed)."""
    images = frame.transpose(2, 0, 1)[None].astype(np.float32)
    return session.run(None, {"images": images})[0]


def check(name: str, run, original: ort.InferenceSession, tolerance: float) -> str:
    """Batch-4 vs singles at 416x416, 320x320 and 416x320 (a 4:3 frame's input), and batch-1 vs
    the original graph at 416."""
    rng = np.random.default_rng(0)
    notes = []
    for width, height in ((INPUT, INPUT), (320, 320), (INPUT, 320)):
        batch = rng.integers(0, 256, (4, height, width, 3), dtype=np.uint8)
        together = run(batch)
        singles = np.concatenate([run(batch[i : i + 1]) for i in range(4)])
        anchors = sum((width // s) * (height // s) for s in (8, 16, 32))
        diff = float(np.abs(together - singles).max())
        size = f"{width}x{height}"
        if together.shape != (4, anchors, 85) or diff > tolerance:
            raise SystemExit(f"{name}: batch check at {size} failed: shape {together.shape}, max diff {diff}")
        notes.append(f"batch-4 vs singles at {size}: {diff:.1e}")
    frame = rng.integers(0, 256, (INPUT, INPUT, 3), dtype=np.uint8)
    ref_diff = float(np.abs(original_output(original, frame) - run(frame[None])).max())
    if ref_diff > tolerance:
        raise SystemExit(f"{name}: differs from the original graph by {ref_diff}")
    notes.append(f"vs original graph: {ref_diff:.1e}")
    return ", ".join(notes)


def main() -> None:
    src, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    full = onnx.load(src)
    heads_path = os.path.join(out_dir, "yolox_nano.heads.onnx")
    onnx.utils.extract_model(src, heads_path, ["images"], head_outputs(full))
    original = ort.InferenceSession(src, providers=["CPUExecutionProvider"])

    # Written under a temporary name and renamed last: its presence means the conversion finished.
    onnx_path = os.path.join(out_dir, "yolox_nano.onnx")
    onnx.save(batched_onnx(onnx.load(heads_path)), onnx_path + ".partial")
    session = ort.InferenceSession(onnx_path + ".partial", providers=["CPUExecutionProvider"])
    onnx_notes = check("onnx", lambda f: session.run(None, {"frames": f})[0], original, TOLERANCE)

    variants = [
        ("yolox_nano.torchscript.pt", torch.float32, True, TOLERANCE),
        ("yolox_nano.bf16.pt", torch.bfloat16, True, BF16_TOLERANCE),
        ("yolox_nano.reference.pt", torch.float32, False, TOLERANCE),
    ]
    for file, dtype, channels_last, tolerance in variants:
        module = torchscript(heads_path, dtype, channels_last)

        def run(frames: np.ndarray, module=module) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(np.ascontiguousarray(frames))).numpy()

        notes = check(file, run, original, tolerance)
        path = os.path.join(out_dir, file)
        module.save(path)
        print(f"saved {path}: {notes}")
    os.remove(heads_path)
    os.replace(onnx_path + ".partial", onnx_path)
    print(f"saved {onnx_path}: {onnx_notes}")


if __name__ == "__main__":
    main()
