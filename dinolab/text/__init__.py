"""Text alignment on a frozen backbone (LiT / dino.txt): zero-shot classification and text search.

- :func:`align`: train a vision head and a text encoder on image-caption pairs, backbone frozen.
- :func:`load_aligned` / :func:`save_aligned`: the aligned model folder.
- :func:`zeroshot_classify`: classes by name, with prompt ensembling.
- :func:`text_search`: images ranked by similarity to a text.
- Parts: :class:`WordTokenizer`, :class:`TextEncoder`, :class:`VisionHead`, :func:`clip_loss`,
  :class:`ClipLoss`.
"""

from .align import align
from .aligned import AlignedEmbeddings, AlignedModel, embed_images, load_aligned, load_embeddings, save_aligned
from .clip_loss import ClipLoss, clip_loss
from .pairs import Pairs, load_pairs
from .search import SearchHit, text_search
from .text_encoder import TextEncoder
from .tokenizer import WordTokenizer
from .vision_head import VisionHead, pooled_features
from .vocab import UnknownWordsWarning
from .zeroshot import DEFAULT_TEMPLATES, ZeroShotResult, class_embeddings, zeroshot_classify

__all__ = ["align", "AlignedEmbeddings", "AlignedModel", "embed_images", "load_aligned", "load_embeddings",
           "save_aligned", "ClipLoss", "clip_loss", "Pairs", "load_pairs", "SearchHit", "text_search", "TextEncoder",
           "WordTokenizer", "VisionHead", "pooled_features", "DEFAULT_TEMPLATES", "ZeroShotResult",
           "class_embeddings", "zeroshot_classify", "UnknownWordsWarning"]
