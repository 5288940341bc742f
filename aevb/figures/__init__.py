"""Figures of what a VAE learned, in three modules (import the one you need; this package
imports none of them). Prior samples and reconstructions come from :mod:`aevb.sampling`.

* :mod:`~aevb.figures.compute`: what figures show, as tensors: posterior means, KL and activity
  per latent unit, manifold grids, traversals, interpolations, 2-D embeddings;
* :mod:`~aevb.figures.draw`: matplotlib figures of those, and the figure toolkit
  (``new_figure``, ``new_panels``, ``save_figure``) that the paper experiments share;
* :mod:`~aevb.figures.runfigures`: a run's figure set (``FigureContext``, ``draw_figures``,
  ``RUN/figures``) and the latent snapshots saved during training.
"""
