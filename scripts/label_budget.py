#!/usr/bin/env python
"""Label-budget study (a sweep): python scripts/label_budget.py --config configs/label-budget-smoke.toml."""
from coremax.cli import label_budget_main

if __name__ == "__main__":
    label_budget_main()
