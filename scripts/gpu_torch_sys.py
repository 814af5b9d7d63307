#!/usr/bin/env python3
"""Stubs the libtch wrappers an older libtorch cannot compile (for `scripts/gpu_bundle.sh`).

tch 0.26's generated C++ wrappers (`libtch/torch_api_generated.cpp`) call every operation of
PyTorch 2.13; against the headers of an older libtorch (the GPU host's 2.11) some do not exist or
take other arguments. Each wrapper the compiler rejected (the `error:` lines of a failed build log)
gets a body that only sets tch's error (`torch_last_err`), so calling it from Rust raises a
`TchError` instead of linking a symbol that is not there. The service calls none of them.

Usage: gpu_torch_sys.py TORCH_SYS_DIR BUILD_LOG  (prints how many wrappers it stubbed)
"""
import re
import sys


def main():
    crate, log = sys.argv[1], sys.argv[2]
    path = f"{crate}/libtch/torch_api_generated.cpp"
    lines = open(path).read().split("\n")
    bad = {int(m.group(1)) for m in re.finditer(r"torch_api_generated\.cpp:(\d+):\d+: error", open(log).read())}
    stubbed = 0
    start = None
    out = []
    for number, line in enumerate(lines, 1):
        if re.match(r"^[A-Za-z].*\batg_\w+\(.*\) \{$", line):
            start = len(out)
        out.append(line)
        if line == "}" and start is not None:
            first = number - (len(out) - start) + 1
            if any(first <= b <= number for b in bad):
                header = out[start]
                returns = header.split("atg_")[0].strip()
                body = ['  torch_last_err = strdup("not available in this libtorch (stubbed by scripts/gpu_torch_sys.py)");']
                if returns != "void":
                    body.append("  return 0;")
                out[start:] = [header] + body + ["}"]
                stubbed += 1
            start = None
    open(path, "w").write("\n".join(out))
    print(stubbed)


if __name__ == "__main__":
    main()
