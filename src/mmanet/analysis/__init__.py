"""Deployment analysis of per-combination results (issue 23): which model to ship for a given sensor availability.

* :mod:`~mmanet.analysis.availability` — the distribution of the arriving combination when each modality
  is available independently, and the expected metric under it (and its sweeps);
* :mod:`~mmanet.analysis.shapley` — every modality's exact Shapley contribution to a model's metric;
* :mod:`~mmanet.analysis.significance` — the paired test between two methods' per-seed values;
* :mod:`~mmanet.analysis.baseline` — the metric of the empty combination (the training majority class);
* :mod:`~mmanet.analysis.deployment` — ``deployment.json`` / ``deployment.md`` of a benchmark or a model.
"""
