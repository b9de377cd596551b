"""Evaluation rows of the disentanglement experiment: grid subsamples and factor sweeps."""

import itertools

import numpy as np

from sdis_tf.data import latents as latents_lib
from sdis_tf.experiments import disentangle_eval


def _grid(sizes):
    return np.array(list(itertools.product(*map(range, sizes))), np.float64)


def test_grid_points_all_rows_or_a_sorted_subsample():
    np.testing.assert_array_equal(disentangle_eval.grid_points(0, 1, 7), np.arange(7))
    np.testing.assert_array_equal(disentangle_eval.grid_points(9, 1, 7), np.arange(7))
    points = disentangle_eval.grid_points(5, 1, 100)
    assert len(np.unique(points)) == 5 and np.all(np.diff(points) > 0) and points.max() < 100


def test_sweeps_of_a_complete_grid_run_through_its_centre():
    sizes = (3, 4, 5)
    table = _grid(sizes) * [1.0, 0.5, 10.0]          # any units
    sweeps = disentangle_eval.sweep_rows(table[::-1])  # any row order
    centre = np.array([1, 2, 2])
    for k, rows in enumerate(sweeps):
        levels = table[::-1][rows] / [1.0, 0.5, 10.0]
        assert len(rows) == sizes[k]
        np.testing.assert_array_equal(levels[:, k], np.arange(sizes[k]))   # sorted by value
        others = np.delete(levels, k, axis=1)
        np.testing.assert_array_equal(others, np.broadcast_to(np.delete(centre, k), others.shape))


def test_sweeps_on_the_3d_shapes_grid_match_its_centre_levels():
    sweeps = disentangle_eval.sweep_rows(latents_lib.grid_factors())
    centre = [size // 2 for size in latents_lib.FACTOR_SIZES]
    for k, size in enumerate(latents_lib.FACTOR_SIZES):
        levels = [np.full(size, c) for c in centre]
        levels[k] = np.arange(size)
        np.testing.assert_array_equal(sweeps[k],
                                      np.ravel_multi_index(levels, latents_lib.FACTOR_SIZES))


def test_sweeps_of_an_incomplete_grid_with_repeated_rows():
    table = _grid((4, 3))
    # Without (1, 1) and (2, 0), only (0, 2) and (3, 2) see every value of both factors
    # along their lines (4 + 3); (3, 2) is the closer to the centre (2, 1).
    keep = [i for i, row in enumerate(table) if tuple(row) not in {(1, 1), (2, 0)}]
    table = np.concatenate([table[keep], table[keep][:3]])   # rows 0..2 repeated
    sweeps = disentangle_eval.sweep_rows(table)
    np.testing.assert_array_equal(table[sweeps[0]], [[0, 2], [1, 2], [2, 2], [3, 2]])
    np.testing.assert_array_equal(table[sweeps[1]], [[3, 0], [3, 1], [3, 2]])
    assert np.all(sweeps[0] < 10) and np.all(sweeps[1] < 10)   # first rows, not repeats
