"""Tests of sdis_tf/data/roles.py: declarations, layout defaults, encodings and their inverses."""

import numpy as np
import pytest

from sdis_tf.data import latents, roles, sprites

DSPRITES_NAMES = ("shape", "scale", "orientation", "posX", "posY")
DSPRITES_GRID = (np.array([1.0, 2.0, 3.0]), np.linspace(0.5, 1.0, 6),
                 np.linspace(0.0, 2 * np.pi, 40), np.linspace(0, 1, 32), np.linspace(0, 1, 32))


def test_parse_periodic():
    assert roles.parse_periodic("orientation:2pi") == ("orientation", 2 * np.pi, 1)
    assert roles.parse_periodic("angle:360:4") == ("angle", 360.0, 4)
    assert roles.parse_periodic("hue:1") == ("hue", 1.0, 1)
    assert roles.parse_periodic("a:pi:2") == ("a", np.pi, 2)
    assert roles.parse_periodic("a:0.5pi") == ("a", 0.5 * np.pi, 1)
    for bad in ("orientation", "orientation:", "a:0", "a:-1", "a:2pi:0", "a:x", ":1", "a:1:2:3",
                "a:1.2.3", 3):
        with pytest.raises(ValueError, match="name:period"):
            roles.parse_periodic(bad)


def test_layout_defaults_and_overrides():
    dsprites = roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "dsprites")
    assert [r.kind for r in dsprites.task] == ["categorical", "continuous", "periodic",
                                               "continuous", "continuous"]
    assert dsprites.task[0].classes == (1.0, 2.0, 3.0)
    assert dsprites.task[2].period == pytest.approx(2 * np.pi)
    assert dsprites.num_latents == 2 + 1 + 2 + 1 + 1
    assert dsprites.latent_names == ("shape=2", "shape=3", "scale", "orientation.cos",
                                     "orientation.sin", "posX", "posY")
    np.testing.assert_array_equal(dsprites.latent_factor, [0, 0, 1, 2, 2, 3, 4])
    assert dsprites.as_dict() == {"shape": "categorical", "scale": "continuous",
                                  "orientation": f"periodic:{2 * np.pi:g}:1",
                                  "posX": "continuous", "posY": "continuous"}
    # The same file read as a plain layout: no defaults, every factor continuous.
    plain = roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "plain")
    assert {r.kind for r in plain.task} == {"continuous"} and plain.num_latents == 5
    # Explicit items override "auto"; () clears the defaults.
    mixed = roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "dsprites",
                                categorical=("auto", "posX"), periodic=("orientation:2pi:4",))
    assert [r.kind for r in mixed.task] == ["categorical", "continuous", "periodic",
                                            "categorical", "continuous"]
    assert mixed.task[2].symmetry == 4
    none = roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "dsprites", categorical=(),
                               periodic=())
    assert {r.kind for r in none.task} == {"continuous"}
    shapes3d = roles.resolve_roles(latents.FACTOR_NAMES, latents.factor_values(), "shapes3d")
    assert [r.kind for r in shapes3d.task] == ["periodic"] * 3 + ["continuous"] * 3
    assert shapes3d.num_latents == 9 and shapes3d.task[0].period == 1.0
    world = roles.resolve_roles(sprites.FACTOR_NAMES, sprites.factor_values(), "sprites")
    assert [r.kind for r in world.task] == ["categorical", "continuous", "periodic",
                                            "continuous", "continuous"]
    assert world.num_latents == 3 + 1 + 2 + 1 + 1


def test_nuisances_and_their_defaults():
    subset = roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "dsprites",
                                 factors=("scale", "posX", "posY"))
    assert subset.task_names == ("scale", "posX", "posY") and subset.task_columns == (1, 3, 4)
    assert subset.nuisances == ("shape", "orientation")      # their defaults do not apply
    assert subset.num_latents == 3
    assert subset.as_dict()["shape"] == "nuisance"
    text = subset.describe()
    assert "scale continuous" in text and "nuisance factors: shape, orientation" in text


def test_declarations_that_do_not_fit_the_data_list_every_problem():
    with pytest.raises(roles.RolesError) as error:
        roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "dsprites",
                            factors=("scale", "posX", "colour"),
                            categorical=("posX", "shape"), periodic=("posX:1", "x:1:2:0"))
    problems = error.value.problems
    assert problems == [
        "factors = ('scale', 'posX', 'colour'): 'colour' is not a factor of the data "
        "(factors: shape, scale, orientation, posX, posY)",
        "periodic = ('posX:1', 'x:1:2:0'): item 'x:1:2:0' is not " + roles.PERIODIC_FORMAT,
        "categorical = ('posX', 'shape'): 'shape' is a nuisance factor (not in factors = "
        "('scale', 'posX', 'colour')); roles are for task factors",
        "categorical = ('posX', 'shape'), periodic = ('posX:1', 'x:1:2:0'): 'posX' is "
        "declared both categorical and periodic"]
    assert str(error.value) == "\n".join(problems)
    # posX's values 0..1 over period 1 (0 and 1 coincide) are fine; a period that folds
    # every value onto two opposite points of the circle is not.
    with pytest.raises(roles.RolesError, match="on at most two opposite points"):
        roles.resolve_roles(("a", "b"), (np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0])),
                            periodic=("a:2",))


@pytest.mark.parametrize("declaration,values,expected", [
    ("continuous", np.array([0.3, -2.0, 5.0]), np.array([0.3, -2.0, 5.0])),
    ("angle:2pi", np.array([0.0, 1.0, 6.0, 2 * np.pi + 0.5, -0.5]),
     np.mod([0.0, 1.0, 6.0, 0.5, -0.5], 2 * np.pi)),
    ("angle:360:4", np.array([0.0, 10.0, 89.0, 90.0, 135.0, 359.0]),
     np.array([0.0, 10.0, 89.0, 0.0, 45.0, 89.0])),            # modulo 360 / 4
])
def test_continuous_and_periodic_encodings_round_trip(declaration, values, expected):
    if declaration == "continuous":
        role = roles.FactorRole("angle", 0)
    else:
        _, period, symmetry = roles.parse_periodic(declaration)
        role = roles.FactorRole("angle", 0, "periodic", period=period, symmetry=symmetry)
    encoded = role.encode(values)
    assert encoded.shape == (len(values), role.width)
    np.testing.assert_allclose(role.decode(encoded), expected, atol=1e-9)
    if role.kind == "periodic":
        np.testing.assert_allclose(np.sum(encoded ** 2, axis=1), 1.0)   # on the unit circle
        np.testing.assert_allclose(role.encode(values + role.period / role.symmetry), encoded,
                                   atol=1e-9)


def test_categorical_encoding_round_trips():
    role = roles.FactorRole("shape", 0, "categorical", classes=(1.0, 2.0, 3.0))
    values = np.array([3.0, 1.0, 2.0, 2.0, 1.0])
    encoded = role.encode(values)
    np.testing.assert_array_equal(encoded, [[0, 1], [0, 0], [1, 0], [1, 0], [0, 0]])
    np.testing.assert_array_equal(role.decode(encoded), values)
    # Decoding takes the largest indicator (class 1 below 1/2): noisy indicators still decode.
    np.testing.assert_array_equal(role.decode(encoded + [0.2, -0.1]), values)
    with pytest.raises(ValueError, match="outside its classes"):
        role.encode(np.array([1.5]))
