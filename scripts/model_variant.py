"""Writes a variant of an ONNX model for trying the model lifecycle (tests, drills).

    python scripts/model_variant.py IN.onnx OUT.onnx [--noise SIGMA] [--seed N]

Every convolution weight (float tensors of 2 or more dimensions) is multiplied by
(1 + SIGMA * N(0, 1)) with a fixed seed, so a variant is the same file every time. SIGMA 0 keeps the weights exactly and changes only the model's
doc string: a byte-different file (another SHA-256, another registry version) that detects exactly
what the original does.
"""

import argparse

import numpy as np
import onnx
from onnx import numpy_helper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--noise", type=float, default=0.0, help="relative weight noise (0: same weights)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    model = onnx.load(args.source)
    rng = np.random.default_rng(args.seed)
    if args.noise > 0:
        for init in model.graph.initializer:
            weights = numpy_helper.to_array(init)
            # Convolution and dense weights only: 1-D float tensors include resize scales and shapes.
            if weights.dtype.kind != "f" or weights.ndim < 2:
                continue
            noisy = weights * (1 + args.noise * rng.standard_normal(weights.shape))
            init.CopyFrom(numpy_helper.from_array(noisy.astype(weights.dtype), init.name))
    model.doc_string = f"its-analytics variant of {args.source}: noise {args.noise}, seed {args.seed}"
    onnx.save(model, args.target)


if __name__ == "__main__":
    main()
