"""Helpers shared by the benchmark scripts (run as `python bench/<name>.py`): timing, results."""

import json
import os
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


def write_results(out, table, data):
    """Writes `out`.md (the Markdown `table`) and `out`.json (`data`) atomically (a finished
    file or the previous one, never half of one), creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    for suffix, text in ((".md", table), (".json", json.dumps(data, indent=1))):
        with open(out + suffix + ".tmp", "w") as f:
            f.write(text)
        os.replace(out + suffix + ".tmp", out + suffix)
