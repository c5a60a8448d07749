#!/usr/bin/env python
"""Archive a data set or experiment with a manifest of hashes, check a copy, unpack elsewhere;
bundle a trained model into one file.

    python scripts/archive.py pack experiment ft1 --out ft1.tar.gz
    python scripts/archive.py unpack ft1.tar.gz --data-root /scratch/data
    python scripts/archive.py check /scratch/data/experiments/ft1
    python scripts/archive.py bundle --experiment ft1 --out ft1.coremax   # one file for predict.py --model
"""
from coremax.cli import archive_main

if __name__ == "__main__":
    archive_main()
