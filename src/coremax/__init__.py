"""CoreMAX: masked spectrum modelling of XRF core-scanner spectra."""

__version__ = "0.1.0"
