#!/usr/bin/env python
"""Suggest which depths of newly scanned cores to send to the lab.

    python scripts/suggest.py --experiment exp1 --raw new-cores/ --n 10 --per-core --out suggest.csv
"""
from coremax.cli import suggest_main

if __name__ == "__main__":
    suggest_main()
