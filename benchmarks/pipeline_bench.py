r"""Input-pipeline benchmark: tf.data throughput of the MPL streams, per CPU core.

One MPL batch is B labeled images (weak view: flip + pad-crop, or Inception crop + flip at
ImageNet size) and mu B unlabeled images seen twice (weak, and strong = weak +
RandAugment(N=2, M) + cutout), normalized to float32: B (1 + 2 mu) images per step. The
benchmark builds these streams with the project's pipeline (`mpl_jax.data.pipeline`) over
random uint8 images held in memory (no decoding: JPEG decoding of real ImageNet files
comes on top), limits tf.data and TensorFlow to `--threads` threads, and prints one JSON
line per size: images per second, and per core.

This one imports TensorFlow; it is not needed on a GPU box.

  python -m benchmarks.pipeline_bench --size=cifar,imagenet --threads=1
"""

import argparse
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from benchmarks import timing  # pylint: disable=g-import-not-at-top
from mpl_jax.data import pipeline  # pylint: disable=g-import-not-at-top

# The paper's settings per size (docs/METHOD.md, section 6; official RandAugment constants).
SIZES = {
    "cifar": dict(kind="cifar", name="cifar10", image_size=32, source_size=32, magnitude=16.0,
                  cutout_size=16, translate_const=None, cutout_const=None),
    "imagenet": dict(kind="imagenet", name="imagenet2012", image_size=224, source_size=320,
                     magnitude=17.0, cutout_size=0, translate_const=100.0,
                     cutout_const=40.0),
}


def make_source(size: str, labeled_batch: int, mu: int, threads: int, pool: int,
                seed: int = 0) -> pipeline.ArraySource:
  """The project's in-memory source over `pool` random uint8 images of the size."""
  s = SIZES[size]
  rng = np.random.default_rng(seed)
  shape = (s["source_size"], s["source_size"], 3)
  images = lambda n: rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
  augment = pipeline.ImageAugment(
      kind=s["kind"], image_size=s["image_size"], randaugment_layers=2,
      randaugment_magnitude=s["magnitude"], cutout_size=s["cutout_size"],
      translate_const=s["translate_const"], cutout_const=s["cutout_const"])
  return pipeline.ArraySource(
      name=s["name"], labeled_x=images(pool), labeled_y=rng.integers(0, 10, pool),
      unlabeled_x=images(pool), unlabeled_y=None, labeled_batch_size=labeled_batch,
      unlabeled_batch_size=mu * labeled_batch, augment=augment, seed=seed, threads=threads)


def run(size: str, labeled_batch: int, mu: int, threads: int, batches: int, warmup: int,
        pool: int) -> dict[str, Any]:
  """Times `batches` batches after `warmup`; returns the JSON record."""
  source = make_source(size, labeled_batch, mu, threads, pool)
  iterator = source.dataset(0).as_numpy_iterator()
  batch = None
  for _ in range(warmup):
    batch = next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  images = labeled_batch * (1 + 2 * mu)
  rate = batches * images / seconds
  s = SIZES[size]
  return {
      "benchmark": "pipeline_bench", "size": size, "image_size": s["image_size"],
      "source_image_size": s["source_size"], "labeled_batch": labeled_batch, "mu": mu,
      "randaugment": {"layers": 2, "magnitude": s["magnitude"]},
      "cutout_size": s["cutout_size"], "threads": threads, "batches": batches,
      "warmup": warmup, "images_per_batch": images, "seconds": seconds,
      "batches_per_s": batches / seconds, "images_per_s": rate,
      "images_per_s_per_core": rate / threads,
      "keys": sorted(batch) if batch is not None else [],
      "tensorflow_version": tf.__version__, **timing.machine_facts(),
  }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", default="cifar,imagenet",
                 help="comma-separated: cifar (32x32) and/or imagenet (224x224)")
  p.add_argument("--labeled_batch", type=int, default=16)
  p.add_argument("--mu", type=int, default=7)
  p.add_argument("--threads", type=int, default=1,
                 help="threads for tf.data and TensorFlow ops (1: a per-core figure)")
  p.add_argument("--batches", type=int, default=20, help="timed batches")
  p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
  p.add_argument("--pool", type=int, default=512, help="distinct random images per stream")
  timing.add_quiet_flags(p)
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  before = timing.wait_until_quiet(args)
  for size in args.size.split(","):
    if size not in SIZES:
      raise SystemExit(f"--size {size!r} is unknown; valid: {sorted(SIZES)}")
    timing.emit(run(size, args.labeled_batch, args.mu, args.threads, args.batches,
                    args.warmup, args.pool), before)


if __name__ == "__main__":
  main(sys.argv[1:])
