"""Evaluation: scoring a submission CSV against ground truth, and the run report."""
