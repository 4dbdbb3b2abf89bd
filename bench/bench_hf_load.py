"""Benchmark: first load of a bundled GGUF model (dequantize and cache) against a load from the cache.

python bench/bench_hf_load.py [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from maker.agents.hf import HFBackend


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MAKER_CACHE"] = cache
        first = HFBackend(args.model)
        second = HFBackend(args.model)
    assert not first.loaded_from_cache and second.loaded_from_cache
    print(f"model               {args.model}")
    print(f"first_load_s        {first.load_s:.2f}  (GGUF dequantized, then saved to the cache)")
    print(f"cached_load_s       {second.load_s:.2f}")
    print(f"speedup             {first.load_s / second.load_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
