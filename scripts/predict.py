#!/usr/bin/env python
"""Predict CaCO3/TOC profiles of newly scanned cores:
python scripts/predict.py --experiment ft1 --raw path/to/new/raw --out profiles.csv"""
from coremax.eval.predict import main

if __name__ == "__main__":
    main()
