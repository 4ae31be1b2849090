"""svd: run and finetune Stable Video Diffusion on your own machine.

Python API (see docs/api.md):
    model = svdcli.load("svd_xt.safetensors", device="cuda", dtype=torch.float16)
    model.unet, model.vae, model.image_encoder, model.architecture
"""

__version__ = "0.1.0"
__all__ = ["load", "CheckpointError", "LoadedModel", "__version__"]


def __getattr__(name):  # keep `import svdcli` (and `svd --version`) free of the torch import
    if name in ("load", "LoadedModel"):
        from .checkpoints import loader
        return getattr(loader, name)
    if name == "CheckpointError":
        from .checkpoints.safetensors_io import CheckpointError
        return CheckpointError
    raise AttributeError(name)
