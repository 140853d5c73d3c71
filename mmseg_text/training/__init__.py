"""Training: run data, the Accelerate loop, optimizer, losses, weight averaging, validation, training state, k-fold."""
