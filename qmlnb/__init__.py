"""qmlnb: quantum machine learning experiments at HPC speed, run from notebooks."""
__version__ = "0.1.0"
