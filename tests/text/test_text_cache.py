import random

import pytest
import torch

from mmseg_text.text import TextEmbeddingCache, build_text_tower, identity_dirname

UNIQUE = ["X-ray of the left hand of a 34-year-old woman, 58 kg, 162 cm tall, wrist straight.",
          "X-ray of the right hand of a 51-year-old man, 80 kg, 175 cm tall, wrist bent 8 degrees toward the radius.",
          "A hand X-ray showing Lunate."]


class Spy:
    """Counts the captions that really reach the tower."""

    def __init__(self, tower, monkeypatch):
        self.calls, self.captions = 0, []
        original = tower.encode

        def encode(captions):
            self.calls += 1
            self.captions.extend(captions)
            return original(captions)

        monkeypatch.setattr(tower, "encode", encode)


def epoch_of_lookups(cache, n_batches=50, seed=0):
    rng = random.Random(seed)
    return [cache.lookup([rng.choice(UNIQUE) for _ in range(rng.randint(1, 6))]) for _ in range(n_batches)]


def test_one_encoder_call_per_unique_caption_over_an_epoch(tiny_tower, tmp_path, monkeypatch):
    spy = Spy(tiny_tower, monkeypatch)
    cache = TextEmbeddingCache(tiny_tower, tmp_path, batch_size=2, progress=False)
    epoch_of_lookups(cache)  # no warm-up: each caption is encoded the first time it is seen, then reused
    assert cache.encoded_captions == 3 and sorted(spy.captions) == sorted(UNIQUE)
    assert len(cache) == 3


def test_warm_then_training_never_runs_the_tower(tiny_tower, tmp_path, monkeypatch):
    spy = Spy(tiny_tower, monkeypatch)
    cache = TextEmbeddingCache(tiny_tower, tmp_path, batch_size=2, progress=False)
    assert cache.warm(UNIQUE + UNIQUE) == 3
    assert (cache.encoder_calls, cache.encoded_captions, spy.calls) == (2, 3, 2)  # batches of 2: [2, 1]
    epoch_of_lookups(cache)
    assert (cache.encoder_calls, cache.encoded_captions, spy.calls) == (2, 3, 2)
    assert cache.warm(UNIQUE) == 0 and spy.calls == 2


def test_lookup_values_padding_and_mask(tiny_tower, tmp_path):
    cache = TextEmbeddingCache(tiny_tower, tmp_path, progress=False)
    batch = [UNIQUE[2], UNIQUE[1], UNIQUE[2]]
    feats = cache.lookup(batch)
    direct = tiny_tower.encode(batch)
    assert feats.tokens.shape == direct.tokens.shape and feats.tokens.device.type == "cpu"
    assert torch.equal(feats.mask, direct.mask)
    assert feats.mask.sum(1).tolist() == [11, 37, 11]
    torch.testing.assert_close(feats.tokens[feats.mask], direct.tokens[direct.mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.pooled, direct.pooled, atol=1e-5, rtol=1e-5)
    assert not feats.tokens[~feats.mask].any()  # padding is zeros
    assert torch.equal(feats.pooled[0], feats.pooled[2])
    single = cache.lookup([UNIQUE[2]])  # padded to the longest of *this* batch only
    assert single.tokens.shape[1] == 11 and single.mask.all()


def test_persistence_across_cache_objects(tiny_tower, tmp_path, monkeypatch):
    first = TextEmbeddingCache(tiny_tower, tmp_path, progress=False)
    first.warm(UNIQUE)
    expected = first.lookup(UNIQUE)
    shards = list(first.directory.glob("shard-*.safetensors"))
    assert len(shards) == 1 and (first.directory / "identity.txt").read_text().strip() == tiny_tower.identity
    assert first.directory.name == identity_dirname(tiny_tower.identity)

    spy = Spy(tiny_tower, monkeypatch)
    second = TextEmbeddingCache(tiny_tower, tmp_path, progress=False)  # as in a new process
    assert second.loaded_captions == 3 and len(second) == 3
    assert second.warm(UNIQUE) == 0
    got = second.lookup(UNIQUE)
    assert spy.calls == 0 and second.encoder_calls == 0
    for name in ("tokens", "mask", "pooled"):
        assert torch.equal(getattr(got, name), getattr(expected, name))


def test_lookup_misses_are_saved_on_save(tiny_tower, tmp_path):
    cache = TextEmbeddingCache(tiny_tower, tmp_path, progress=False)
    cache.lookup(UNIQUE[:2])
    assert not list(tmp_path.rglob("shard-*"))  # lookups do not write; save() does
    assert cache.save() is not None and cache.save() is None
    assert TextEmbeddingCache(tiny_tower, tmp_path, progress=False).loaded_captions == 2


def test_other_identity_gets_its_own_cache(tiny_tower, tiny_proj_tower, tmp_path):
    TextEmbeddingCache(tiny_tower, tmp_path, progress=False).warm(UNIQUE)
    other = TextEmbeddingCache(tiny_proj_tower, tmp_path, progress=False)
    assert other.directory != TextEmbeddingCache(tiny_tower, tmp_path, progress=False).directory
    assert other.loaded_captions == 0 and len(other) == 0
    feats = other.lookup(UNIQUE)
    assert other.encoded_captions == 3 and feats.tokens.shape[-1] == 32
    other.save()
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 2


def test_shards_are_compacted_and_damaged_shards_skipped(tiny_tower, tmp_path):
    cache = TextEmbeddingCache(tiny_tower, tmp_path, progress=False, max_shards=2)
    for i in range(5):
        cache.warm([f"caption number {i}"])
    assert len(list(cache.directory.glob("shard-*.safetensors"))) <= 2
    (cache.directory / "shard-0-broken.safetensors").write_bytes(b"not a safetensors file")
    reloaded = TextEmbeddingCache(tiny_tower, tmp_path, progress=False)
    assert reloaded.loaded_captions == 5 and reloaded.encoder_calls == 0


def test_memory_only_cache_and_trainable_tower_refused(tiny_tower, text_cfg):
    cache = TextEmbeddingCache(tiny_tower, None, progress=False)
    cache.warm(UNIQUE)
    assert cache.save() is None and len(cache) == 3
    trainable = build_text_tower(text_cfg())
    next(trainable.parameters()).requires_grad_(True)
    with pytest.raises(ValueError, match="frozen text tower"):
        TextEmbeddingCache(trainable, None)


def test_released_tower_serves_cached_captions_only(tiny_tower, tmp_path):
    cache = TextEmbeddingCache(tiny_tower, tmp_path, progress=False)
    cache.warm(UNIQUE)
    before = cache.lookup(UNIQUE)
    cache.release_tower()  # the engine frees the transformer once the run's captions are warm
    after = cache.lookup(UNIQUE)
    assert cache.width == 64 and torch.equal(after.tokens, before.tokens) and torch.equal(after.pooled, before.pooled)
    with pytest.raises(KeyError, match="released"):
        cache.lookup(["a caption nobody warmed"])
