"""Timing helper shared by the benchmark scripts (run as `python bench/<name>.py`)."""

import time


def best_time(fn, repeats, warmup=False):
    """Best wall time of `repeats` calls of `fn()` in seconds (after one untimed call if `warmup`)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
