"""Shared arithmetic of the layers above (metrics, split-conformal quantiles, external parameter
orthogonalisation, the weighting of rows): NumPy and pandas only, nothing of CoreMAX."""
