"""Training stage: the driver (`driver`: split, datasets, artifacts), the Ray Train launch
(`trainer`), the per-worker loop (`worker`) and the training datasets (`data`)."""
