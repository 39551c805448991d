"""Run every benchmark module in this package (or the ones named on the command line)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import bench


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the benchmarks under bench/.")
    parser.add_argument("only", nargs="*", metavar="NAME", help=f"modules to run (default: all of {names})")
    args = parser.parse_args()
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {names}")
    for name in args.only or names:
        print(f"== {name}")
        result_path = importlib.import_module(f"bench.{name}").main()
        print(f"   results: {result_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
