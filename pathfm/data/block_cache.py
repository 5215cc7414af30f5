"""A remote slide as a seekable read-only file, fetched in blocks through fsspec's LRU block cache."""

from __future__ import annotations

import io


class BlockCachedFile(io.RawIOBase):
    """A read-only file over ``fs.cat_file`` ranges with fsspec's LRU block cache
    (:class:`fsspec.caching.BlockCache`): each miss fetches one ``block_size`` block, at most
    ``cache_blocks`` are kept. Works for every fsspec filesystem (s3, gcs, azure, http, memory), and a
    remote object that disappears shows up as an error on the next block miss."""

    def __init__(self, fs, path: str, block_size: int, cache_blocks: int):
        from fsspec.caching import BlockCache

        super().__init__()
        self.fs, self.path = fs, path
        self.size = int(fs.size(path))
        self.fetches = 0
        self._cache = BlockCache(block_size, self._fetch, self.size, maxblocks=cache_blocks)
        self._pos = 0

    def _fetch(self, start: int, end: int) -> bytes:
        self.fetches += 1
        return self.fs.cat_file(self.path, start=start, end=end)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + int(offset))
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        if self._pos >= end:
            return b""
        data = self._cache._fetch(self._pos, end)
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)
