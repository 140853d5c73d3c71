"""Engine: training, evaluation, inference and ablations. Imports data/text/models; never imported by them."""
