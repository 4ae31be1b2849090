"""Reading safetensors files tensor by tensor.

The format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte offsets) and the raw
bytes. We read each tensor with a plain positioned read into a fresh buffer instead of memory-mapping the file:
pages of a mapped file that have been touched count towards the process's resident memory, which would make loading
a 4.8 GB checkpoint cost up to twice its size in RSS. Nothing here can execute code from the file.
"""

import json
import os
import struct
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER = 100 * 1024 * 1024
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line meant for the user."""


def refuse_pickle(path: Path) -> None:
    """Pickle-based checkpoints can run arbitrary code when loaded; we never open them."""
    head = b""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(9)
    # A safetensors file starts with its header length (u64) and then "{"; the length's first byte may well be
    # 0x80, so the pickle magic only counts when the file is not shaped like safetensors.
    safetensors = len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size
    if path.suffix.lower() in PICKLE_SUFFIXES or (not safetensors and (head[:1] == b"\x80" or
                                                                      head[:4] == b"PK\x03\x04")):
        raise CheckpointError(f"{path}: pickle-based checkpoints (.ckpt/.pt/.bin) are refused because loading them "
                              "can run code; use the .safetensors file of the same model")


class SafetensorsFile:
    """Header of one safetensors file, and positioned reads of its tensors."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        refuse_pickle(self.path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    raise CheckpointError(f"{self.path}: not a safetensors file (only {size} bytes)")
                (n,) = struct.unpack("<Q", raw)
                if n > MAX_HEADER or 8 + n > size:
                    raise CheckpointError(f"{self.path}: not a safetensors file, or truncated (bad header length)")
                header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{self.path}: not a safetensors file (unreadable header)") from None
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read ({e.strerror})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: not a safetensors file (unreadable header)")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        data_size = size - self._data_start
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        end_max = 0
        for name, e in header.items():
            try:
                dtype = DTYPES[e["dtype"]]
                shape = tuple(int(s) for s in e["shape"])
                begin, end = (int(o) for o in e["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.path}: not a safetensors file (bad entry for {name!r})") from None
            numel = 1
            for s in shape:
                numel *= s
            if end - begin != numel * torch.empty((), dtype=dtype).element_size() or begin < 0:
                raise CheckpointError(f"{self.path}: corrupt header (size of {name!r} does not match its shape)")
            self._entries[name] = (dtype, shape, begin, end)
            end_max = max(end_max, end)
        if end_max > data_size:
            raise CheckpointError(f"{self.path}: truncated file ({data_size + self._data_start} bytes, "
                                  f"{end_max + self._data_start} expected); download it again")

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return self._entries[name][0]

    def nbytes(self, name: str) -> int:
        _, _, begin, end = self._entries[name]
        return end - begin

    def read(self, name: str) -> torch.Tensor:
        """The tensor in its stored dtype, on the CPU, in memory of its own."""
        dtype, shape, begin, end = self._entries[name]
        buf = torch.empty(end - begin, dtype=torch.uint8)
        if end > begin:
            with open(self.path, "rb") as f:
                f.seek(self._data_start + begin)
                got = f.readinto(memoryview(buf.numpy()))
            if got != end - begin:
                raise CheckpointError(f"{self.path}: truncated while reading {name!r}; download it again")
        return buf.view(dtype).reshape(shape)
