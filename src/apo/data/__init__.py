"""Data: episodes, atomic HDF5 storage, normalization statistics, expert demonstrations."""

from apo.data.episode import LABEL_HUMAN, LABEL_POLICY, LABEL_UNDESIRABLE, Episode
from apo.data.stats import DatasetStats
from apo.data.storage import DatasetError, EpisodeWriter, iter_episodes, load_episodes, read_episode

__all__ = [
    "DatasetError", "DatasetStats", "Episode", "EpisodeWriter", "LABEL_HUMAN", "LABEL_POLICY",
    "LABEL_UNDESIRABLE", "iter_episodes", "load_episodes", "read_episode",
]
