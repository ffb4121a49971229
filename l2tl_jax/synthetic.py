"""Synthetic batches of a run's shapes, for timing and compiling steps.

Random float32 images in [0, 1) and int32 labels in [0, classes), drawn from
a `numpy.random.Generator`: what the step benchmarks (experiments/bench.py,
bench_device.py) and the policy study's step timing feed the steps in place
of data. Only numpy is imported, so that a bench can run where the data
packages are missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Examples = dict[str, np.ndarray]


def examples(rng: np.random.Generator, n: int, *, image_shape: Sequence[int],
             classes: int) -> Examples:
  """One batch: {'image': float32 [n, *image_shape] in [0, 1), 'label':
  int32 [n] in [0, classes)}."""
  if n < 1 or classes < 1:
    raise ValueError(
        f"n and classes must be >= 1, got n={n}, classes={classes}.")
  return {"image": rng.random((n, *image_shape), dtype=np.float32),
          "label": rng.integers(0, classes, n, dtype=np.int32)}


def batches(rng: np.random.Generator, sizes: Mapping[str, int], *,
            image_shape: Sequence[int],
            classes: Mapping[str, int]) -> dict[str, Examples]:
  """{name: `examples` of sizes[name] with classes[name]} in the order of
  `sizes` (the draws follow that order)."""
  missing = [name for name in sizes if name not in classes]
  if missing:
    raise ValueError(f"No class count for batch(es) {missing}; classes "
                     f"names {list(classes)}.")
  return {name: examples(rng, n, image_shape=image_shape,
                         classes=classes[name])
          for name, n in sizes.items()}


def joint_batch(rng: np.random.Generator, sizes: Mapping[str, int], *,
                image_shape: Sequence[int], num_src_classes: int,
                num_tgt_classes: int) -> dict[str, Examples]:
  """The L2TL step's batch: 'src' with source labels, 'tgt' and 'val' with
  target labels, of `sizes` (`L2TLOptions.joint_batch_sizes`)."""
  return batches(rng, sizes, image_shape=image_shape,
                 classes={"src": num_src_classes, "tgt": num_tgt_classes,
                          "val": num_tgt_classes})
