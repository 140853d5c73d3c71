"""Weight averaging behind one protocol (``train.averaging``): none, EMA (timm) or SWA (torch.optim.swa_utils).

    averager = build_averager(cfg.train, model, total_steps)   # registered with save_state: resume is exact
    averager.update(model, step)                              # after every optimizer step
    averager.evaluated(model)                                 # the weights to validate and export during training
    final = averager.finalize(batches)                        # at the end: a model to validate once more, or None

EMA (Polyak averaging with warm-up, timm ``ModelEmaV3``) is validated at every evaluation: its weights are the
model. SWA (Izmailov et al. 2018; a standard trick of segmentation competitions) averages equally the snapshots
taken every ``train.swa_every`` steps after ``train.swa_start`` of the run; its BatchNorm statistics belong to no
snapshot, so ``finalize`` recomputes them over training batches and the average is validated once, at the end.
Each process keeps its own copy; after the gradient all-reduce every copy sees the same updates.

Adding a method: a class with these three methods, and one line in ``AVERAGING_REGISTRY`` (its name in
``choices.AVERAGING``).
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Mapping, Optional, Protocol

import torch
from torch import nn

from mmseg_text.choices import lookup

logger = logging.getLogger(__name__)


class WeightAverager(Protocol):
    def update(self, model: nn.Module, step: int) -> None: ...

    def evaluated(self, model: nn.Module) -> nn.Module: ...

    def finalize(self, forward_batches: Callable[[nn.Module], None]) -> Optional[nn.Module]: ...


class NoAveraging:
    """The trained weights as they are."""

    def update(self, model: nn.Module, step: int) -> None:
        pass

    def evaluated(self, model: nn.Module) -> nn.Module:
        return model

    def finalize(self, forward_batches: Callable[[nn.Module], None]) -> Optional[nn.Module]:
        return None


class EmaAveraging:
    """timm's ModelEmaV3 (decay ``train.ema_decay``, with warm-up): validated and exported at every evaluation."""

    def __init__(self, model: nn.Module, decay: float):
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay, use_warmup=True)

    def update(self, model: nn.Module, step: int) -> None:
        self.ema.update(model, step=step)

    def evaluated(self, model: nn.Module) -> nn.Module:
        return self.ema.module

    def finalize(self, forward_batches: Callable[[nn.Module], None]) -> Optional[nn.Module]:
        return None

    def state_dict(self):  # save_state / load_state
        return self.ema.state_dict()

    def load_state_dict(self, state):
        self.ema.load_state_dict(state)


class SwaAveraging:
    """Equal average of snapshots every ``every`` steps from step ``start`` on (torch ``AveragedModel``)."""

    def __init__(self, model: nn.Module, *, start: int, every: int):
        from torch.optim.swa_utils import AveragedModel

        self.start, self.every = start, every
        self.swa = AveragedModel(model, use_buffers=False)

    def update(self, model: nn.Module, step: int) -> None:
        if step >= self.start and (step - self.start) % self.every == 0:
            self.swa.update_parameters(model)

    def evaluated(self, model: nn.Module) -> nn.Module:
        return model  # the average's BatchNorm statistics are only right after finalize

    @property
    def snapshots(self) -> int:
        return int(self.swa.n_averaged.item())

    def finalize(self, forward_batches: Callable[[nn.Module], None]) -> Optional[nn.Module]:
        """Recompute BatchNorm statistics of the average (``forward_batches(model)`` runs training batches
        through it in train mode); return the averaged network, or None if no snapshot was taken."""
        if self.snapshots == 0:
            logger.warning("train.averaging=swa: no snapshot was taken (the run ended before train.swa_start)")
            return None
        averaged = self.swa.module
        norms = [m for m in averaged.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            momenta = {m: m.momentum for m in norms}
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the batches seen
            was_training = averaged.training
            averaged.train()
            with torch.no_grad():
                forward_batches(averaged)
            averaged.train(was_training)
            for m, momentum in momenta.items():
                m.momentum = momentum
        logger.info("SWA: %d snapshots averaged%s", self.snapshots,
                    f", BatchNorm statistics of {len(norms)} layers recomputed" if norms else "")
        return averaged

    def state_dict(self):
        return self.swa.state_dict()

    def load_state_dict(self, state):
        self.swa.load_state_dict(state)


# train.averaging -> factory (train config, unwrapped model, total steps) -> averager; names: choices.AVERAGING.
AVERAGING_REGISTRY: Mapping[str, Callable[..., WeightAverager]] = {
    "none": lambda train_cfg, model, total_steps: NoAveraging(),
    "ema": lambda train_cfg, model, total_steps: EmaAveraging(model, train_cfg.ema_decay),
    "swa": lambda train_cfg, model, total_steps: SwaAveraging(
        model, start=max(1, int(train_cfg.swa_start * total_steps)), every=train_cfg.swa_every),
}


def build_averager(train_cfg, model: nn.Module, total_steps: int) -> WeightAverager:
    return lookup(AVERAGING_REGISTRY, "train.averaging", train_cfg.averaging)(train_cfg, model, total_steps)


def forward_all(batches: Iterable[dict], run: Callable[[nn.Module, dict], None]) -> Callable[[nn.Module], None]:
    """``forward_batches`` for :meth:`SwaAveraging.finalize`: ``run(model, batch)`` for each batch."""
    def forward_batches(model: nn.Module) -> None:
        for batch in batches:
            run(model, batch)
    return forward_batches
