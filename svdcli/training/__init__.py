"""Finetuning: the trainer (EDM objective, resumable loop, DDP), the training data (windows, cached encodings) and
the whole `svd train-lora` job.

May import: inference and everything below it. Nothing of demo or cli."""
