#!/usr/bin/env python
"""Sweep over config keys and seeds: python scripts/sweep.py --config sweep.toml [--jobs N]."""
from coremax.cli import sweep_main

if __name__ == "__main__":
    sweep_main()
