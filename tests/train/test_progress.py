"""Progress lines: cadence, rate, ETA, metrics."""

from sdis_tf.train.progress import Progress, format_duration


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_format_duration():
    assert format_duration(4.2) == "4s"
    assert format_duration(65) == "1m05s"
    assert format_duration(3725) == "1h02m05s"


def test_lines_come_every_interval_with_rate_eta_and_metrics():
    clock = FakeClock()
    progress = Progress(1000, every_seconds=30.0, name="lasso", clock=clock)
    clock.now += 40.0  # the first step (compilation) is slow
    first = progress.update(1, {"train/loss": 0.5})
    assert first == "[lasso] step 1/1000 (0%), ? steps/s, ETA ?, train/loss=0.5"
    clock.now += 10.0
    assert progress.update(101, {"train/loss": 0.4}) is None  # not due yet
    clock.now += 20.0
    line = progress.update(301, {"train/loss": 0.25, "eval/mcc": 0.9})
    assert line == ("[lasso] step 301/1000 (30%), 10.00 steps/s, ETA 1m10s, "
                    "eval/mcc=0.9 train/loss=0.25")
    assert progress.update(302, {}, force=True).startswith("[lasso] step 302/1000")


def test_non_finite_and_non_numeric_metrics_are_shown():
    progress = Progress(10, every_seconds=0.0, clock=FakeClock())
    line = progress.update(1, {"eval/mcc": float("nan"), "eval/r": float("inf"),
                               "eval/note": "nan"})
    assert line.endswith("eval/mcc=nan eval/note=nan eval/r=inf")


def test_per_factor_scores_stay_out_of_the_progress_line():
    progress = Progress(10, every_seconds=0.0, clock=lambda: 0.0)
    text = progress.line(5, {"eval/mcc": 0.9, "eval/mcc/shape": 0.1, "train/loss": 0.5})
    assert "eval/mcc=0.9" in text and "train/loss=0.5" in text and "shape" not in text
