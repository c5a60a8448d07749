#!/usr/bin/env python
"""Training throughput benchmark: python scripts/bench_train.py [--steps 10] [--only text]."""
from coremax.cli import bench_train_main

if __name__ == "__main__":
    bench_train_main()
