"""A plain decoder of Label Studio's brush RLE, written independently of the encoder under test."""

from __future__ import annotations

import numpy as np


def decode_labelstudio_rle(rle: list[int]) -> np.ndarray:
    bits = "".join(f"{byte:08b}" for byte in rle)
    pos = 0

    def read(n):
        nonlocal pos
        value = int(bits[pos : pos + n], 2)
        pos += n
        return value

    num = read(32)
    word_size = read(5) + 1
    run_sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(run_sizes[read(2)])
        if repeat:
            out[i:j] = read(word_size)
            i = j
        else:
            while i < j:
                out[i] = read(word_size)
                i += 1
    return out
