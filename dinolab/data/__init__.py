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

# Batched augmentation on the training device and iBOT masks.
from .augment import IMAGENET_MEAN, IMAGENET_STD, Photometric  # noqa: E402
from .masking import MaskingGenerator, sample_ibot_masks  # noqa: E402
from .multicrop import Crops, MultiCrop, sample_crop_boxes  # noqa: E402

__all__ += ["Crops", "IMAGENET_MEAN", "IMAGENET_STD", "MaskingGenerator", "MultiCrop", "Photometric",
            "sample_crop_boxes", "sample_ibot_masks"]
