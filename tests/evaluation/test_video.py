"""Video helpers."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest

from apo.evaluation.video import border, upscale, write_video


def test_upscale():
    f = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    up = upscale(f, 3)
    assert up.shape == (6, 6, 3)
    np.testing.assert_array_equal(up[::3, ::3], f)
    np.testing.assert_array_equal(up[2, 2], f[0, 0])
    assert upscale(f, 1) is f


def test_border_paints_edges_only():
    f = np.zeros((10, 10, 3), np.uint8)
    out = border(f, (255, 0, 0), width=2)
    assert (f == 0).all()  # input untouched
    assert (out[:2] == [255, 0, 0]).all() and (out[:, -2:] == [255, 0, 0]).all()
    assert (out[2:-2, 2:-2] == 0).all()


def test_write_video(tmp_path):
    frames = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(5)]
    path = write_video(tmp_path / "sub" / "v.mp4", frames, fps=10, scale=2)
    reader = imageio.get_reader(path)
    got = [f for f in reader]
    reader.close()
    assert len(got) == 5 and got[0].shape == (32, 32, 3)
    assert abs(int(got[4].mean()) - 160) < 10  # content survives encoding
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])
