#!/usr/bin/env python
"""Train an experiment: python scripts/train.py --config exp.toml --stage pretrain|finetune|baseline."""
from coremax.cli import train_main

if __name__ == "__main__":
    train_main()
