"""Taking a model out of aevb: ONNX files (``export_onnx``) and a safetensors file with the
configuration as metadata (``save_safetensors``), which ``load_safetensors`` turns back into a VAE."""
from .safetensors_file import load_safetensors, safetensors_metadata, save_safetensors


def export_onnx(*args, **kwargs):
    """See :func:`aevb.export.onnx_files.export_onnx` (imported on use: it needs the export extra)."""
    from .onnx_files import export_onnx as _export_onnx

    return _export_onnx(*args, **kwargs)


__all__ = ["export_onnx", "save_safetensors", "load_safetensors", "safetensors_metadata"]
