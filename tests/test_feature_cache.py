"""FeatureCache: hits, invalidation, corrupt entries, unwritable directories, concurrent writers."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

from itaclip.engine.feature_cache import FeatureCache, default_cache_dir

pytestmark = pytest.mark.timeout(60)


class Counter:
    """A compute function that counts its calls and returns a fixed random tensor."""

    def __init__(self, seed: int = 0, shape=(7, 512), dtype=torch.float32):
        self.calls = 0
        self.value = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return self.value.clone()


def test_hit_computes_once(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache.key(model="abc", texts=["cat", "dog"], templates=["a photo of a {}."], version=1)
    compute = Counter()
    first = cache.get_or_compute(key, compute)
    second = cache.get_or_compute(key, compute)
    assert compute.calls == 1
    assert torch.equal(first, compute.value) and torch.equal(second, compute.value)
    assert second.dtype == torch.float32 and second.device.type == "cpu"
    # a fresh object on the same directory (a new process) hits too
    third = FeatureCache(tmp_path).get_or_compute(key, compute)
    assert compute.calls == 1 and torch.equal(third, compute.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_kept(tmp_path, dtype):
    cache = FeatureCache(tmp_path)
    compute = Counter(dtype=dtype)
    key = cache.key(dtype=str(dtype))
    cache.get_or_compute(key, compute)
    loaded = cache.get_or_compute(key, compute)
    assert compute.calls == 1 and loaded.dtype == dtype and torch.equal(loaded, compute.value)


def test_key_is_stable_and_sensitive(tmp_path):
    cache = FeatureCache(tmp_path)
    base = dict(model="m1", texts=["cat", "dog"], templates=["a {}."], context_length=77, version=1)
    key = cache.key(**base)
    assert key == cache.key(**dict(reversed(list(base.items()))))  # keyword order is irrelevant
    assert key == FeatureCache(tmp_path / "other").key(**base)  # independent of the directory
    assert key == cache.key(**{**base, "texts": ("cat", "dog")})  # tuples == lists
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    for change in (
        {"model": "m2"},
        {"texts": ["dog", "cat"]},
        {"texts": ["cat", "dog", "bird"]},
        {"templates": ["a photo of a {}."]},
        {"context_length": 64},
        {"version": 2},
    ):
        assert cache.key(**{**base, **change}) != key, change
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cache.key(model=torch.zeros(1))


def test_different_parts_recompute(tmp_path):
    cache = FeatureCache(tmp_path)
    first, second = Counter(seed=1), Counter(seed=2)
    a = cache.get_or_compute(cache.key(texts=["cat"]), first)
    b = cache.get_or_compute(cache.key(texts=["cat", "dog"]), second)
    assert first.calls == 1 and second.calls == 1
    assert not torch.equal(a, b)
    assert torch.equal(cache.get_or_compute(cache.key(texts=["cat"]), first), a) and first.calls == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:5],  # truncated inside the header
        lambda data: b"",  # empty
        lambda data: data[:-1] + bytes([data[-1] ^ 0xFF]),  # one flipped byte in the payload
        lambda data: b"garbage" * 100,  # not our format at all
        lambda data: data + b"extra",  # trailing bytes
    ],
    ids=["half", "header", "empty", "bitflip", "garbage", "trailing"],
)
def test_corrupt_entry_is_recomputed_and_overwritten(tmp_path, damage):
    cache = FeatureCache(tmp_path)
    key = cache.key(texts=["cat"])
    compute = Counter()
    cache.get_or_compute(key, compute)
    path = cache.path(key)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.warns(UserWarning, match="corrupt"):
        again = cache.get_or_compute(key, compute)
    assert compute.calls == 2 and torch.equal(again, compute.value)
    # the entry was rewritten: the next call is a clean hit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(cache.get_or_compute(key, compute), compute.value)
    assert compute.calls == 2


def test_valid_checksum_but_not_a_tensor_is_rejected(tmp_path):
    import hashlib
    import io

    from itaclip.engine import feature_cache as fc

    cache = FeatureCache(tmp_path)
    key = cache.key(texts=["x"])
    buffer = io.BytesIO()
    torch.save({"not": "a tensor"}, buffer)
    payload = buffer.getvalue()
    tmp_path.joinpath(f"{key}.pt").write_bytes(
        fc._MAGIC + fc._HEADER.pack(len(payload), hashlib.sha256(payload).digest()) + payload
    )
    compute = Counter()
    with pytest.warns(UserWarning, match="corrupt"):
        assert torch.equal(cache.get_or_compute(key, compute), compute.value)
    assert compute.calls == 1


def test_unwritable_directory_computes_and_warns_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a directory")
    cache = FeatureCache(blocker / "cache")  # mkdir fails whatever the user's rights (root too)
    compute = Counter()
    with pytest.warns(UserWarning, match="cannot write the feature cache") as record:
        a = cache.get_or_compute(cache.key(texts=["a"]), compute)
        b = cache.get_or_compute(cache.key(texts=["b"]), compute)
    assert len([w for w in record if "cannot write" in str(w.message)]) == 1
    assert compute.calls == 2 and torch.equal(a, compute.value) and torch.equal(b, compute.value)


def test_device_argument_and_compute_errors(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache.key(texts=["a"])
    assert cache.get_or_compute(key, Counter(), device="cpu").device.type == "cpu"
    with pytest.raises(TypeError, match="must return a tensor"):
        cache.get_or_compute(cache.key(texts=["b"]), lambda: [1, 2, 3])
    with pytest.raises(ValueError, match="malformed key"):
        cache.get_or_compute("../../etc/passwd", Counter())
    # an exception inside compute propagates and leaves nothing behind
    with pytest.raises(RuntimeError, match="boom"):
        cache.get_or_compute(cache.key(texts=["c"]), lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.pt"]


def test_default_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("ITACLIP_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env" / "text"
    assert FeatureCache().directory == tmp_path / "env" / "text"
    monkeypatch.delenv("ITACLIP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "itaclip" / "text"


def test_concurrent_writers_and_readers(tmp_path):
    """Many writers store the same key at once while readers poll: every read is either a miss or
    the complete tensor, the survivor is valid and no temporary file is left behind."""
    value = torch.randn(256, 512, generator=torch.Generator().manual_seed(3))
    key = FeatureCache(tmp_path).key(texts=["concurrent"])
    start = threading.Barrier(10)
    stop = threading.Event()
    bad_reads: list[str] = []
    results: list[torch.Tensor] = []

    def writer():
        cache = FeatureCache(tmp_path)
        start.wait()
        for _ in range(5):
            cache.put(key, value)
        results.append(cache.get_or_compute(key, lambda: value.clone()))

    def reader():
        cache = FeatureCache(tmp_path)
        start.wait()
        while not stop.is_set():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = cache.get(key)
            if caught or (got is not None and not torch.equal(got, value)):
                bad_reads.append("partial or corrupt read")

    writers = [threading.Thread(target=writer) for _ in range(8)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join(30)
    stop.set()
    for thread in readers:
        thread.join(30)
    assert not bad_reads
    assert len(results) == 8 and all(torch.equal(r, value) for r in results)
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.pt"]
