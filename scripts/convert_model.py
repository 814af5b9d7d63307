#!/usr/bin/env python3
"""Convert YOLOX-Nano (ONNX, batch 1 baked in) into a TorchScript module with a real batch dimension.

The ONNX export flattens its three per-stride head maps with Reshape nodes whose target shape has
batch size 1 written into it; a plain trace would silently fold a batch of N into one image's rows.
So we cut the graph before those reshapes (the heads `[N, 85, H, W]` become the outputs), convert
that with onnx2torch, and do flatten / concat / permute in a small wrapper that keeps N.

Usage: convert_model.py SRC.onnx DST.pt
Checks before saving: the batch-1 output equals the original graph's layout, and a batch of 4
equals four single-image runs.
"""
import sys

import onnx
import onnx.utils
import torch
from onnx2torch import convert

INPUT = 416


def head_outputs(model: onnx.ModelProto) -> list[str]:
    """Names of the tensors that feed the final Reshape nodes (one per stride, in order)."""
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    if len(reshapes) != 3:
        raise SystemExit(f"expected 3 Reshape nodes in the YOLOX head, found {len(reshapes)}")
    return [n.input[0] for n in reshapes]


class BatchedYolox(torch.nn.Module):
    def __init__(self, heads: torch.nn.Module):
        super().__init__()
        self.heads = heads

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.heads(images)
        flat = [m.flatten(2) for m in maps]  # [N, 85, H*W] each
        return torch.cat(flat, dim=2).permute(0, 2, 1).contiguous()  # [N, 3549, 85]


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    full = onnx.load(src)
    heads_path = dst + ".heads.onnx"
    onnx.utils.extract_model(src, heads_path, ["images"], head_outputs(full))
    heads = convert(onnx.load(heads_path)).eval()
    model = BatchedYolox(heads).eval()

    torch.manual_seed(0)
    example = torch.rand(2, 3, INPUT, INPUT) * 255.0
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(model, example).eval())
        batch = torch.rand(4, 3, INPUT, INPUT) * 255.0
        together = traced(batch)
        singles = torch.cat([traced(batch[i : i + 1]) for i in range(4)])
        diff = (together - singles).abs().max().item()
        if together.shape != (4, 3549, 85) or diff > 1e-3:
            raise SystemExit(f"batch check failed: shape {tuple(together.shape)}, max diff {diff}")
        reference = convert(full).eval()(batch[:1])
        ref_diff = (reference - traced(batch[:1])).abs().max().item()
        if ref_diff > 1e-3:
            raise SystemExit(f"converted model differs from the ONNX graph by {ref_diff}")
    traced.save(dst)
    print(f"saved {dst}: batch-4 vs singles max diff {diff:.2e}, vs original graph {ref_diff:.2e}")


if __name__ == "__main__":
    main()
