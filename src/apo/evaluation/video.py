"""Rollout videos (MP4 through imageio-ffmpeg), with who acted shown as a coloured frame."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from apo.data.episode import LABEL_HUMAN, LABEL_POLICY, LABEL_UNDESIRABLE, Episode

LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    LABEL_UNDESIRABLE: (255, 136, 0),
    LABEL_POLICY: (34, 170, 34),
    LABEL_HUMAN: (221, 34, 34),
}
"""Frame colour per step label, as in the console's replay: orange = one of the K policy steps before
a takeover (label 0), green = the policy acts (1), red = the person acts (2)."""


def upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    return frame.repeat(factor, 0).repeat(factor, 1) if factor > 1 else frame


def border(frame: np.ndarray, colour: tuple[int, int, int], width: int = 3) -> np.ndarray:
    """Paint a coloured frame around an image (e.g. red while the person is in control)."""
    out = frame.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = colour, colour, colour, colour
    return out


def framed(frame: np.ndarray, colour: tuple[int, int, int], width: int = 2) -> np.ndarray:
    """The image with a coloured frame of ``width`` pixels added around it (nothing of it is hidden)."""
    frame = np.asarray(frame, np.uint8)
    out = np.empty((frame.shape[0] + 2 * width, frame.shape[1] + 2 * width, 3), np.uint8)
    out[:] = colour
    out[width : width + frame.shape[0], width : width + frame.shape[1]] = frame
    return out


def labeled_frames(images: np.ndarray, labels: np.ndarray, width: int = 2) -> list[np.ndarray]:
    """One framed image per step, coloured by the step's label (``LABEL_COLOURS``)."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    unknown = set(np.unique(labels).tolist()) - set(LABEL_COLOURS)
    if unknown:
        raise ValueError(f"labels must be 0, 1 or 2; got {sorted(unknown)}")
    return [framed(im, LABEL_COLOURS[int(lab)], width) for im, lab in zip(images, labels)]


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


def write_episode_video(path: str | os.PathLike, episode: Episode, fps: int = 20, scale: int = 4,
                        width: int = 2) -> Path:
    """A recorded episode as a video whose frame colour shows who acted at each step (takeovers in red)."""
    return write_video(path, labeled_frames(episode.images, episode.labels, width), fps, scale)
