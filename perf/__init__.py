"""Performance measurements of issue #11 — not tests, and not the accuracy benchmarks of ``mmanet benchmark``:
one ``BENCH <name> ratio=<float> target=<float> <details>`` line each.

Usage (from the repository root)::

    python -m perf [--quick] [--only NAME[,NAME…]]
    python -m perf --profile {mfeat,image} [--profile-out DIR]

Every ratio compares two measurements taken in THIS process, interleaved (A, B, B, A, …) after a
warm-up, as the median of the per-repeat ratios (robust to load drift on a shared machine).
Torch runs on ONE intra-op thread (``torch.set_num_threads(1)`` and ``OMP_NUM_THREADS=1``, fixed
and printed): on a shared 2-core machine two threads under contention are ~10x slower and noisy.

Lines (docs/performance.md explains each):

* ``eval_all_combinations`` — PerCombinationEvaluator with all 7 combinations ÷ with only the full one,
  SF image network (3 × 3×112×112, width 64, 13.2 M parameters), synthetic images. The encoders run
  once per batch, and so does the head's split prefix (concat fusion: layer3's first conv and
  downsample per modality, ``MultimodalNet.predict_combinations``); the rest of the trunk runs once
  per combination, so by FLOPs the ratio cannot go below ``(E + P + 7R) / (E + T)`` (E: the 3
  encoders, T: fusion + trunk, P: the split prefix, R: the rest + the sum of the partials; MACs
  counted with forward hooks). The line prints that floor (and the one without the split,
  ``(E + 7T) / (E + T)``) and says when the target is below it.
* ``eval_all_combinations_mfeat`` — the same on mfeat (63 combinations, configs/mfeat/sf_md.yaml).
* ``mar_mining`` (mfeat, train split) and ``mar_mining_sf`` (SF image network, synthetic) — one
  mine_discrepancies pass over full + leave-one-out candidates ÷ one full-modality inference pass.
* ``train_step_overhead`` — MMANet training step (teacher forward in inference mode, MAD, MAR
  regularization head, weak set active) ÷ SF-MD step, SF image network, same batch and dropout
  masks; training_step + backward + optimizer step (configs/casia_surf/{mmanet,sf_md}.yaml).
* ``mad_memory`` — peak extra resident memory of per-pixel MAD forward + backward (N = 9600 pixels,
  C = 64), block-wise (``mad_loss(per_pixel=True)``) ÷ a dense autograd implementation; each
  variant in its own subprocess (see :func:`perf.mad_memory.mad_child` for the method); the details give the relative
  difference of loss and gradient.
* ``naive_vs_shared`` / ``naive_vs_shared_mfeat`` — one evaluator (encode + fuse + head) per
  combination ÷ the shared path, both with metrics; for information.
"""
