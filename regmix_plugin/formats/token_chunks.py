"""Prepared token chunks (litdata's ``optimize`` output in ``TokensLoader`` format) read as fixed-size blocks.

One reader for everything that reads a prepared domain: MixtureData's stream, the validation blocks that
``regmix evaluate``/``sweep``/the controller score, the epoch unit of the planners, token entropy.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np


class TokenSource:
    """Random access to fixed-size token blocks of one litdata-optimized directory (``TokensLoader`` format).

    Block ``j`` of chunk ``c`` is tokens ``[j * block_size, (j + 1) * block_size)`` of that chunk, as litdata's
    ``TokensLoader`` cuts them. Chunks are memory-mapped on first use; a few stay open.
    """

    def __init__(self, input_dir: str | Path, block_size: int, max_open: int = 4):
        self.input_dir = Path(input_dir)
        index_file = self.input_dir / "index.json"
        if not index_file.is_file():
            raise FileNotFoundError(f"{index_file} is missing; re-run `regmix prepare` for this corpus")
        index = json.loads(index_file.read_text())
        from regmix_plugin.litgpt_compat import chunk_header_bytes, token_dtype

        try:
            self.dtype = token_dtype(index["config"]["data_format"][0])
        except ValueError as e:
            raise ValueError(f"{index_file}: {e}") from None
        self.block_size = block_size
        chunks = index["chunks"]
        self._files = [self.input_dir / c["filename"] for c in chunks]
        self._offsets = [chunk_header_bytes(c["chunk_size"]) for c in chunks]
        self.chunk_blocks = np.array([c["dim"] // block_size for c in chunks], dtype=np.int64)
        self.num_blocks = int(self.chunk_blocks.sum())
        self.num_tokens = int(sum(c["dim"] for c in chunks))
        self._max_open = max_open
        self._open: OrderedDict[int, np.memmap] = OrderedDict()
        self._ends: np.ndarray | None = None

    def block(self, chunk: int, j: int) -> np.ndarray:
        """Tokens of block ``j`` of chunk ``chunk`` (a view into the memory map)."""
        mm = self._open.get(chunk)
        if mm is None:
            mm = np.memmap(self._files[chunk], dtype=self.dtype, mode="r", offset=self._offsets[chunk])
            self._open[chunk] = mm
            if len(self._open) > self._max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(chunk)
        return mm[j * self.block_size : (j + 1) * self.block_size]

    def block_at(self, i: int) -> np.ndarray:
        """Tokens of the ``i``-th block of the whole directory, counting through the chunks in order."""
        if self._ends is None:
            self._ends = np.cumsum(self.chunk_blocks)
        chunk = int(np.searchsorted(self._ends, i, side="right"))
        return self.block(chunk, int(i) - (int(self._ends[chunk - 1]) if chunk else 0))

    def evenly_spaced(self, count: int) -> np.ndarray:
        """The validation set of this directory: ``count`` block indices evenly spaced over all its blocks.

        The one definition used by ``MixtureData``'s ``val_loss`` and by ``regmix evaluate``/``sweep``, so a
        model scored by either sees the same tokens.
        """
        count = min(int(count), self.num_blocks)
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.linspace(0, self.num_blocks - 1, count).round().astype(np.int64))

    def __getstate__(self) -> dict:
        # memory maps are reopened in each worker process
        return {**self.__dict__, "_open": OrderedDict()}
