"""Video helpers."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest

from apo.data.episode import LABEL_HUMAN, LABEL_POLICY, LABEL_UNDESIRABLE
from apo.evaluation.video import (
    LABEL_COLOURS, border, framed, labeled_frames, upscale, write_episode_video, write_video,
)


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


def test_framed_adds_a_border_around_the_whole_image():
    f = np.full((4, 5, 3), 7, np.uint8)
    out = framed(f, (1, 2, 3), width=2)
    assert out.shape == (8, 9, 3)
    np.testing.assert_array_equal(out[2:6, 2:7], f)  # nothing of the image is hidden
    assert (out[:2] == [1, 2, 3]).all() and (out[:, -2:] == [1, 2, 3]).all()


def test_labeled_frames_colour_each_step_by_who_acted():
    images = np.zeros((4, 6, 6, 3), np.uint8)
    labels = np.array([LABEL_POLICY, LABEL_UNDESIRABLE, LABEL_HUMAN, LABEL_POLICY], np.int8)
    frames = labeled_frames(images, labels, width=1)
    assert [tuple(f[0, 0]) for f in frames] == [LABEL_COLOURS[int(lab)] for lab in labels]
    assert LABEL_COLOURS[LABEL_HUMAN] == (221, 34, 34)  # the person's steps are red
    with pytest.raises(ValueError, match="labels"):
        labeled_frames(images, labels[:3])
    with pytest.raises(ValueError, match="0, 1 or 2"):
        labeled_frames(images, np.array([1, 1, 3, 1]))


def test_episode_video_shows_the_takeover(tmp_path, make_episode):
    labels = np.array([LABEL_POLICY, LABEL_UNDESIRABLE, LABEL_HUMAN, LABEL_HUMAN, LABEL_POLICY], np.int8)
    ep = make_episode(T=5, size=16, labels=labels)
    path = write_episode_video(tmp_path / "ep.mp4", ep, fps=10, scale=2, width=2)
    reader = imageio.get_reader(path)
    got = [f for f in reader]
    reader.close()
    assert len(got) == 5 and got[0].shape == (40, 40, 3)  # (16 + 2 * 2) px, upscaled 2x
    corner = [f[:4, :4].reshape(-1, 3).mean(0) for f in got]
    for c, lab in zip(corner, labels):
        np.testing.assert_allclose(c, LABEL_COLOURS[int(lab)], atol=30)
