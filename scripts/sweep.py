#!/usr/bin/env python
"""Sweep over config keys and seeds: python scripts/sweep.py --config sweep.toml [--jobs N]."""
from coremax.sweep import main

if __name__ == "__main__":
    main()
