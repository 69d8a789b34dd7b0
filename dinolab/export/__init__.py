"""Deployment: ONNX export verified with ONNX Runtime, and an ONNX-Runtime-backed backbone.

- :func:`export_onnx` writes a backbone (or backbone + classifier head) as ``.onnx``;
- :func:`load_onnx` reads one back as an :class:`OnnxBackbone`, which :func:`dinolab.embed` runs.
"""

from .onnx import ExportCheck, ExportResult, export_onnx
from .runtime import OnnxBackbone, load_onnx, load_runtime_model

__all__ = ["export_onnx", "ExportResult", "ExportCheck", "OnnxBackbone", "load_onnx", "load_runtime_model"]
