#!/usr/bin/env python
"""Prediction benchmark: python scripts/bench_predict.py [--spectra 100000]."""
from coremax.cli import bench_predict_main

if __name__ == "__main__":
    bench_predict_main()
