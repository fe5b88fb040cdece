"""Evaluation splits built once: `eval_batches()` and `test_batches()` of a task come from its
`split_batches(name)` ("validation" or "test"), are cached, and every evaluation sees the same
batches (a task without a test split returns None for "test")."""

from __future__ import annotations


class CachedSplits:
    """Mixin: `eval_batches` / `test_batches` from `split_batches(name)`, each built once."""

    def split_batches(self, name: str) -> list | None:
        raise NotImplementedError(f"{type(self).__name__} must define split_batches(name)")

    def _cached_split(self, name: str):
        cache = self.__dict__.setdefault("_split_cache", {})
        if name not in cache:
            cache[name] = self.split_batches(name)
        return cache[name]

    def eval_batches(self) -> list:
        return self._cached_split("validation")

    def test_batches(self) -> list | None:
        return self._cached_split("test")
