"""The issue-8 benchmarks (fused kernel vs numpy loop vs Brian2, overhead, scaling,
sinusoid CML meta-training); the same as ``neuro-meta bench``.

Usage::

    python benchmarks/bench_fused.py [--quick] [--out DIR]

No timing is asserted anywhere: numbers depend on the machine and its load.
"""
import argparse

from neuro_meta.bench import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 2 minutes with numba)")
    parser.add_argument("--out", default="results/bench", help="output folder")
    args = parser.parse_args()
    main(quick=args.quick, out=args.out)
