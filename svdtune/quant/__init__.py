"""SVDQuant W4A4 and baselines: `quantize(model_or_pipeline, QuantConfig(...))`."""

from svdtune.quant.config import CalibrationConfig, QuantConfig
from svdtune.quant.linear import SVDQuantLinear, set_backend
from svdtune.quant.quantize import quantize, size_summary
from svdtune.quant.serialize import load_quantized, save_quantized

__all__ = ["CalibrationConfig", "QuantConfig", "SVDQuantLinear", "set_backend", "quantize", "size_summary",
           "load_quantized", "save_quantized"]
