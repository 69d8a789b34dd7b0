"""Small building blocks of the Vision Transformer, one concern per file."""

from .attention import Attention
from .block import Block
from .drop_path import DropPath
from .layer_scale import LayerScale
from .mlp import Mlp, SwiGLU, swiglu_hidden_dim
from .patch_embed import PatchEmbed
from .pos_embed import interpolate_pos_embed
from .rope import RopePositionEmbedding

__all__ = ["Attention", "Block", "DropPath", "LayerScale", "Mlp", "SwiGLU", "swiglu_hidden_dim", "PatchEmbed",
           "interpolate_pos_embed", "RopePositionEmbedding"]
