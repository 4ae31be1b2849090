"""The built-in demo model: its recipe (procedural clips, the autoencoder, the U-Net and the zoom LoRA trained by this
project), the checks that measure it, and its shipped weights (the .safetensors files beside this).

May import: everything but cli."""
