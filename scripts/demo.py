#!/usr/bin/env python
"""The whole chain on the embedded synthetic data, what `make demo` runs (python scripts/demo.py --help)."""
from coremax.cli import demo_main

if __name__ == "__main__":
    demo_main()
