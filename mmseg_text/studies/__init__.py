"""Studies: ablations and their report, held-out test scoring, paired statistics, the counterfactual probe."""
