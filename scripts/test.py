#!/usr/bin/env python
"""Evaluate an experiment on its held-out test cores: python scripts/test.py --experiment exp1."""
from coremax.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
