#!/usr/bin/env python
"""Data path benchmark: python scripts/bench_data.py [--spectra 1000000] [--workers 2]."""
from coremax.cli import bench_data_main

if __name__ == "__main__":
    bench_data_main()
