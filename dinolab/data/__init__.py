"""Images in: data sets, decoding, loaders, bad-file accounting (augmentation lives in multicrop/masking)."""

from .badfiles import BadFileLog
from .builtin import load_builtin
from .datasets import IMAGE_EXTENSIONS, ImageDataset
from .decode import DEFAULT_MAX_PIXELS, UnreadableImage, decode_image
from .loader import ShardedSampler, make_loader, resize_eval, resize_train

__all__ = [
    "BadFileLog", "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageDataset", "ShardedSampler", "UnreadableImage",
    "decode_image", "load_builtin", "make_loader", "resize_eval", "resize_train",
]
