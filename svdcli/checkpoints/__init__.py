"""Weights on disk: the architectures and presets, the one loader (sgm single files and diffusers folders) with its
key tables, writing our own files, finding and downloading the official ones.

May import: models, media, runtime. Nothing above (video, inference, training, demo, cli)."""
