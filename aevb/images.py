"""Image grids from flattened data, written as PNG.

Data rows are [N, D] with D = C*H*W; a grid keeps the data's own shape and channels.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from .io import atomic_write_bytes


def to_images(x: torch.Tensor, image_shape: Sequence[int]) -> np.ndarray:
    """[N, D] values (clipped to [0, 1]) -> uint8 [N, H, W, C]."""
    c, h, w = (int(s) for s in image_shape)
    a = x.detach().float().cpu().reshape(-1, c, h, w).clamp(0, 1).numpy()
    return np.round(a.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def grid(x: torch.Tensor, image_shape: Sequence[int], ncol: int = 8, pad: int = 1,
         pad_value: int = 255) -> np.ndarray:
    """Tile N images row by row, ``ncol`` per row: uint8 [rows*(H+pad)+pad, ncol*(W+pad)+pad, C]."""
    imgs = to_images(x, image_shape)
    n, h, w, c = imgs.shape
    ncol = max(1, min(ncol, n))
    nrow = (n + ncol - 1) // ncol
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        out[y0:y0 + h, x0:x0 + w] = imgs[i]
    return out


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """uint8 [H, W, C] (C = 1 or 3) -> PNG bytes, optionally enlarged by an integer factor."""
    from PIL import Image

    if scale > 1:
        array = array.repeat(scale, 0).repeat(scale, 1)
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(path: Union[str, Path], x: torch.Tensor, image_shape: Sequence[int], ncol: int = 8,
              scale: int = None) -> Path:
    """Write a grid of the rows of ``x`` as a PNG (atomically). Small images are enlarged so a
    person can see them (to roughly 56 pixels per tile unless ``scale`` is given)."""
    g = grid(x, image_shape, ncol)
    if scale is None:
        scale = max(1, 56 // max(int(image_shape[1]), int(image_shape[2])))
    path = Path(path)
    atomic_write_bytes(path, png_bytes(g, scale))
    return path
