#!/usr/bin/env python
"""Label-budget study: python scripts/label_budget.py --config configs/label-budget-smoke.toml."""
from coremax.eval.study import main

if __name__ == "__main__":
    main()
