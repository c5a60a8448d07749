#!/usr/bin/env python
"""Predict down-core profiles (CaCO3, TOC, ... the experiment's targets) of newly scanned cores:
python scripts/predict.py --experiment ft1 --raw path/to/new/raw --out profiles.csv
or, without the data set: python scripts/predict.py --model ft1.coremax --raw path/to/new/raw --out profiles.csv"""
from coremax.cli import predict_main

if __name__ == "__main__":
    predict_main()
