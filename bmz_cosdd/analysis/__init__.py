"""Looking at noise and results: noise inspection, evaluation against ground truth, sampling views."""
