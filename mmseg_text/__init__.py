"""mmseg-text: text-conditioned segmentation of hand-bone X-rays."""

__version__ = "0.1.0"
