"""Throughput of the procedural 3D Shapes renderer, and a full injectivity check.

    .venv/bin/python bench/shapes3d_render.py [--seconds 10] [--batch 400]
    .venv/bin/python bench/shapes3d_render.py --all-distinct   # all 480,000 images

Reports images/s by wall clock and by process CPU time, for `render.render`
alone and for the `tf.data` task pipeline (T=8 tasks x n=50 images per batch),
with the load average before and after: on a shared machine the wall-clock
rate is what was left for us; `2 * images / cpu_seconds` estimates the rate on
2 idle cores (assuming the work spreads over both).
"""

import argparse
import hashlib
import os
import time

import numpy as np

from sdis_tf.data import latents, pipeline, render


def _measure(step, images_per_step, seconds):
    step()  # compile / warm up
    wall, cpu, count = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - wall < seconds:
        step()
        count += images_per_step
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images": count, "wall_s": wall, "cpu_s": cpu, "wall_rate": count / wall,
            "two_core_rate": 2 * count / cpu}


def throughput(seconds: float, batch: int) -> None:
    factors = latents.grid_factors(np.random.default_rng(0).integers(0, latents.NUM_POINTS, batch))
    print(f"load average before: {os.getloadavg()}")
    result = _measure(lambda: render.render(factors).numpy(), batch, seconds)
    print(f"render.render, batch {batch}: {result['wall_rate']:.0f} images/s wall clock "
          f"({result['images']} images in {result['wall_s']:.1f} s, {result['cpu_s']:.1f} CPU-s); "
          f"2-core estimate from CPU time {result['two_core_rate']:.0f} images/s")
    iterator = iter(pipeline.task_batches("render", num_tasks=8, num_samples=50, seed=0))
    result = _measure(lambda: next(iterator), 400, seconds)
    print(f"task_batches('render'), T=8 x n=50: {result['wall_rate']:.0f} images/s wall clock "
          f"({result['cpu_s']:.1f} CPU-s); 2-core estimate {result['two_core_rate']:.0f} images/s")
    print(f"load average after: {os.getloadavg()}")


def all_distinct(batch: int) -> None:
    """Renders the whole grid, quantised to uint8, and counts distinct images."""
    digests = set()
    start = time.perf_counter()
    for first in range(0, latents.NUM_POINTS, batch):
        indices = np.arange(first, min(first + batch, latents.NUM_POINTS))
        images = (render.render(latents.grid_factors(indices)).numpy() * 255).round()
        for image in images.astype(np.uint8):
            digests.add(hashlib.blake2b(image.tobytes(), digest_size=16).digest())
    print(f"{len(digests)} distinct uint8 images out of {latents.NUM_POINTS} grid points "
          f"({time.perf_counter() - start:.0f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--all-distinct", action="store_true")
    args = parser.parse_args()
    if args.all_distinct:
        all_distinct(args.batch)
    else:
        throughput(args.seconds, args.batch)


if __name__ == "__main__":
    main()
