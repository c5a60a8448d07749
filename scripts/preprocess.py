#!/usr/bin/env python
"""Raw Avaatech .spe files + bulk CSV -> a prepared data set (train/val/test Parquet tables + .npy counts, info.toml).

    python scripts/preprocess.py --split=0.8                     # the embedded synthetic data (generated if needed)
    python scripts/preprocess.py --raw path/to/raw --bulk bulk.csv --name mycores --test-cores A,B --split-by section
"""
from coremax.cli import preprocess_main

if __name__ == "__main__":
    preprocess_main()
