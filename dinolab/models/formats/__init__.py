"""Weight formats, one module each; :mod:`dinolab.models.weights` picks the right one.

All formats meet in the *canonical* state dict: the key names of :class:`VisionTransformer`
(the official DINOv2 names, with DINOv3's ``storage_tokens`` called ``register_tokens`` and
SwiGLU's packed ``w12`` split into ``w1``/``w2``).

- :mod:`.tensor_files`: safe reading of ``.pth``/``.safetensors`` files, streaming safetensors writer.
- :mod:`.official`: official DINO v1 / DINOv2 / DINOv3 files and training checkpoints.
- :mod:`.infer`: the architecture of a canonical state dict, from tensor shapes.
- :mod:`.hf`: Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` / ``DINOv3ViTModel`` folders.
- :mod:`.dinolab_format`: dinolab's own safetensors + JSON.
"""
