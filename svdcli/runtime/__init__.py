"""How things run: devices and dtypes (devices.py, the one place they are decided), weights stored in fewer bytes
(quantize), offloading, interrupts, huge pages, and counting memory.

May import: models only (nothing of checkpoints, media or above)."""
