"""Seeds derived from names, the same on every machine and in every process: a stream per purpose (an item of a
batch, a training step, a LoRA pair), so that one does not depend on which others there are or in what order they
come. One home for the hashing, so that every stream is drawn the same way."""

import hashlib


def digest64(text: str, byteorder: str = "little") -> int:
    """The first 8 bytes of the text's sha256, as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], byteorder)


def seed_of(*parts) -> int:
    """A 63-bit seed for the stream named by parts, e.g. seed_of(base_seed, "lora", layer_name)."""
    return digest64("/".join(map(str, parts))) >> 1
