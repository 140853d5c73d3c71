"""Data layer: the real on-disk format, metadata, masks, caches, splits, transforms, synthetic data."""
