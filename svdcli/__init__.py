"""svd: run and finetune Stable Video Diffusion on your own machine.

Python API (see docs/api.md):
    model = svdcli.load("svd_xt.safetensors", device="cuda", dtype=torch.float16)
    model.unet, model.vae, model.image_encoder, model.architecture
    engine = svdcli.open_engine(svdcli.load_preset("svd-xt"), Path("svd_xt.safetensors"), svdcli.EngineSettings())
    engine.pipe.generate(image, settings, seed=7)          # svdcli.VideoPipeline
"""

__version__ = "0.1.0"
__all__ = ["load", "LoadedModel", "CheckpointError", "load_preset", "open_engine", "EngineSettings", "VideoPipeline",
           "SamplingSettings", "__version__"]
_HOMES = {"load": "checkpoints.loader", "LoadedModel": "checkpoints.loader",
          "CheckpointError": "checkpoints.safetensors_io", "load_preset": "checkpoints.presets",
          "open_engine": "inference.generation", "EngineSettings": "inference.generation",
          "VideoPipeline": "inference.pipeline", "SamplingSettings": "inference.pipeline"}


def __getattr__(name):  # keep `import svdcli` (and `svd --version`) free of the torch import
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(name)
