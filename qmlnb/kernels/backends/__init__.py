"""Gram backends; see ``qmlnb.kernels.registry`` for the interface."""
