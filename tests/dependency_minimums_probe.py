"""Run by tests/test_dependency_minimums.py in a subprocess whose PYTHONPATH puts the declared minimum
versions of albumentations, accelerate, open_clip_torch and timm first: each library API the package
calls, called the way the package calls it (mostly through the package's own code).

Prints one JSON line {distribution: [version, module file]} so the test can see which versions ran.
Any failure is an exception (non-zero exit, traceback on stderr).
"""
from __future__ import annotations

import json
import sys
import tempfile
from importlib import import_module, metadata
from pathlib import Path

import numpy as np
import torch

MODULES = {"albumentations": "albumentations", "accelerate": "accelerate", "open-clip-torch": "open_clip",
           "timm": "timm"}


def check_albumentations() -> None:
    """Compose(seed=, save_applied_params=True), set_random_seed and the applied params (flip bookkeeping)."""
    from mmseg_text.data.transforms import build_transforms

    augment = build_transforms([{"name": "HorizontalFlip", "p": 1.0}, {"name": "Affine", "p": 1.0, "rotate": [-45, 45]},
                                {"name": "RandomBrightnessContrast", "p": 0.5, "brightness_limit": 0.15,
                                 "contrast_limit": 0.15}], seed=0)
    image = np.random.default_rng(0).integers(0, 255, (32, 48), dtype=np.uint8)
    masks = np.zeros((3, 32, 48), np.uint8)
    masks[:, :, :10] = 1
    out, out_masks, mirrored = augment(image, masks, seed=3)
    assert out.shape == (32, 48) and out_masks.shape == (3, 32, 48) and mirrored
    again, again_masks, _ = augment(image, masks, seed=3)
    assert np.array_equal(out, again) and np.array_equal(out_masks, again_masks), "seeded call not reproducible"
    applied = augment.compose(image=image, masks=masks)["applied_transforms"]
    assert [name for name, _ in applied][:2] == ["HorizontalFlip", "Affine"], applied
    assert isinstance(applied[1][1], dict) and "rotate" in applied[1][1]


def check_accelerate() -> None:
    """DataLoaderConfiguration(use_seedable_sampler=True, data_seed=) as in training/loop.py, and the
    SeedableRandomSampler(data_seed=) benchmarks/peer.py draws the same order with."""
    from accelerate import Accelerator
    from accelerate.data_loader import SeedableRandomSampler
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    with tempfile.TemporaryDirectory() as out:
        accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=7),
                                  project_config=ProjectConfiguration(project_dir=out, logging_dir=out))
        loader = accelerator.prepare(torch.utils.data.DataLoader(list(range(10)), batch_size=2, shuffle=True))
        sampler = loader.batch_sampler.sampler
        assert isinstance(sampler, SeedableRandomSampler) and sampler.initial_seed == 7, type(sampler)
        order = [int(i) for batch in loader for i in batch]
    same = list(SeedableRandomSampler(list(range(10)), data_seed=7))
    assert order == [int(i) for i in same], (order, same)


def check_open_clip() -> None:
    """The text tower: create_model(..., pretrained_text=False), text_global_pool(eos_token_id=), tokenizer."""
    import open_clip

    from mmseg_text.text.open_clip_tower import RANDOM_INIT_SEED, build_open_clip_tower

    tower = build_open_clip_tower("tiny-clip-proj", None)
    captions = ["a right hand", "the distal phalanx of the left little finger"]
    features = tower.encode(captions)
    assert features.tokens.shape[0] == 2 and features.pooled.shape == (2, tower.width)
    torch.manual_seed(RANDOM_INIT_SEED)
    reference = open_clip.create_model("tiny-clip-proj", pretrained=None, pretrained_image=False,
                                       pretrained_text=False, device="cpu").eval()
    with torch.no_grad():
        expected = reference.encode_text(open_clip.get_tokenizer("tiny-clip-proj")(captions))
    assert torch.allclose(features.pooled, expected, atol=1e-5), "pooled is not open_clip's encode_text"


def check_timm() -> None:
    """features_only + feature_info, weights through pretrained_cfg_overlay=dict(file=...), timm's
    missing-keys log line (read back as an error), Swin's NHWC output and the pretrained cfg's data config."""
    import timm
    from safetensors.torch import save_file

    from mmseg_text.models.encoders import EncoderWeightsError, TimmEncoder, encoder_data_config

    with tempfile.TemporaryDirectory() as tmp:
        state = timm.create_model("resnet18").state_dict()
        path = str(Path(tmp) / "w.safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        encoder = TimmEncoder("resnet18", in_chans=1, weights=path)
        assert torch.equal(encoder.model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
        assert torch.allclose(encoder.model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True), atol=1e-6)
        assert encoder.model.pretrained_cfg["file"] == path
        del state["bn1.bias"]
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        try:
            TimmEncoder("resnet18", weights=path)
        except EncoderWeightsError as err:
            assert "1 missing keys: bn1.bias" in str(err), err
        else:
            raise AssertionError("a missing key was not reported")
    swin = TimmEncoder("swin_tiny_patch4_window7_224", image_size=64, embed_dim=24, depths=(1, 1, 1, 1),
                       num_heads=(1, 1, 1, 1), window_size=4)
    features = swin(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [(c, 64 // r, 64 // r) for c, r in
                                                       zip(swin.feature_channels, swin.feature_reductions)]
    assert encoder_data_config("tf_efficientnet_lite0", in_chans=1)["mean"] == (0.5,)


def main() -> None:
    torch.set_num_threads(1)
    check_albumentations()
    check_accelerate()
    check_open_clip()
    check_timm()
    found = {dist: [metadata.version(dist), str(Path(import_module(module).__file__).resolve())]
             for dist, module in MODULES.items()}
    print(json.dumps(found))


if __name__ == "__main__":
    sys.exit(main())
