#!/usr/bin/env python
"""Write a synthetic Avaatech XRF core-scanner archive (.spe files, bulk.csv, truth.csv, manifest.toml).

    python scripts/simulate.py --out data/datasets/external/synthetic --cores 12 --spacing-mm 10
"""
from coremax.cli import simulate_main

if __name__ == "__main__":
    simulate_main()
