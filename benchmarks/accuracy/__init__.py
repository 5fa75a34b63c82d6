"""Held-out accuracy benchmark: the product's training and scoring vs the original study's method.

    python -m benchmarks.accuracy --output benchmarks/results/accuracy            # every variant
    python -m benchmarks.accuracy --tiny --output outputs/accuracy-tiny           # CI smoke

Every variant trains on the same split of the study-shaped catalog (default data/sample_catalog) and
is evaluated on Fashion-MNIST *test* images of the same classes, which no variant sees in training or
model selection.

Variants (``--variants``, see ``settings.VARIANTS``):
  product_custom_cnn            ``prepare_training``/``run_training`` on Ray Train (2 workers x 0.5 CPU),
  product_mobilenet_v2          then ``prepare_scoring``/``score`` on the held-out catalog; held-out
  product_mobilenet_v2_scratch  metrics come from that scoring run's ``evaluation/summary.json``
                                (temperature-calibrated confidences, as users get them).
                                ``product_custom_cnn`` runs once per ``--imbalance`` strategy,
                                ``product_mobilenet_v2`` once per ``--mobilenet-imbalance`` strategy.
  baseline_published_cnn        The study's method made leak-free: a one-process Keras ``fit`` on
  baseline_published_mobilenet_v2   the same split and image size, the study's augmentation applied to
  baseline_fixed_cnn            training batches only (Keras preprocessing layers), early stopping and
  baseline_fixed_mobilenet_v2   the two-phase schedule. "published": MobileNetV2 fed [0, 1] pixels and
                                class weights keyed by class-name strings (Keras looks weights up by
                                integer class id, so they have no effect); "fixed": [-1, 1] input and
                                integer-keyed class weights.

Writes ``accuracy.json``, ``results.md`` and ``reliability.png`` to ``--output`` (rewritten after
every variant, so an interrupted run keeps what it finished). Model artifacts and scoring outputs go
to ``--work-dir`` (default ``<output>/work``, deleted at the end unless ``--keep-work``).

Modules: ``settings`` (variants, schedule, run settings), ``data`` (split and held-out images),
``metrics``, ``study`` (the study's training input), ``runners`` (one row: product or baseline),
``run`` (all rows, failures isolated), ``judging``, ``report`` (rendering), ``resume`` (--append,
--reuse-work), ``flags`` (command line → settings), ``__main__``.
"""
