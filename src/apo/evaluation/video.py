"""Rollout videos (MP4 through imageio-ffmpeg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    return frame.repeat(factor, 0).repeat(factor, 1) if factor > 1 else frame


def border(frame: np.ndarray, colour: tuple[int, int, int], width: int = 3) -> np.ndarray:
    """Paint a coloured frame around an image (e.g. red while the person is in control)."""
    out = frame.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = colour, colour, colour, colour
    return out


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: int = 20, scale: int = 4) -> Path:
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        raise ValueError("no frames to write")
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, quality=7) as w:
        for f in frames:
            w.append_data(upscale(np.asarray(f, np.uint8), scale))
    return path
