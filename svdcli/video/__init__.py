"""Clips: motion measurement and camera labels, curation, evaluation, frame interpolation.

May import: checkpoints, models, media, runtime. Nothing of inference, training, demo or cli."""
