"""svdtune: quantization-aware LoRA fine-tuning of 4-bit diffusion models."""
__version__ = "0.1.0"
