"""Figures of what a VAE learned. :mod:`~aevb.figures.sampling` is the one way to draw prior
samples and reconstructions (seeded, the same on any device), for training, ``aevb sample``,
``aevb reconstruct``, the figures and the explorer. This package imports none of its modules, so
that training can use the sampling module without matplotlib.
"""
