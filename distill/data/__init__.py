"""Training data: synthetic clips, benchmark loaders and the clip dataset the trainer samples from."""

from .loaders import DATASETS, DatasetError, DatasetNotFoundError, load_dataset
from .sequences import VideoSequence, read_mask, read_rgb

__all__ = ["DATASETS", "DatasetError", "DatasetNotFoundError", "VideoSequence", "load_dataset", "read_mask", "read_rgb"]
