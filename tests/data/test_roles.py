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


@pytest.mark.parametrize("text,expected", [
    ("joint 2:360", ("joint 2", 360.0, 1)),           # a name with a space
    ("a:b:2pi:4", ("a:b", 2 * np.pi, 4)),             # the name: all before the numbers
    ("x:y:360", ("x:y", 360.0, 1)),
    ("a:1:2:3", ("a:1", 2.0, 3)),
    ("v:2:360:1", ("v:2", 360.0, 1)),                 # a name ending in ':<number>'
    ("angle: 360 : 4", ("angle", 360.0, 4)),          # spaces around the numbers
])
def test_parse_periodic_reads_the_name_from_the_right(text, expected):
    name, period, symmetry = roles.parse_periodic(text)
    assert (name, symmetry) == (expected[0], expected[2])
    assert period == pytest.approx(expected[1])


@pytest.mark.parametrize("bad,reason", [
    ("orientation", "no ':period' after the name"),
    ("orientation:", "'' after the last ':' is not a number"),
    ("a:x", "'x' after the last ':' is not a number"),
    ("a:1:x", "'x' after the last ':' is not a number"),
    ("a:1.2.3", "'1.2.3' after the last ':' is not a number"),
    (":1", "no factor name before ':1'"),
    ("a:0", "period 0 is not a finite number > 0"),
    ("a:-1", "period -1 is not a finite number > 0"),
    ("a:1e400", "period 1e400 is not a finite number > 0"),
    ("a:2pi:0", "symmetry 0 is not an int >= 1"),
    ("a:360:2.5", "symmetry 2.5 is not an int >= 1"),
    (3, "of type int, not a string"),
])
def test_a_malformed_periodic_item_is_blamed_for_what_is_wrong(bad, reason):
    with pytest.raises(roles.PeriodicFormatError) as error:
        roles.parse_periodic(bad)
    assert error.value.reason == reason
    assert str(error.value) == f"{bad!r}: {reason}; allowed: {roles.PERIODIC_FORMAT}"


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
                                categorical=("auto", "posX"), periodic=("orientation:2pi:3",))
    assert [r.kind for r in mixed.task] == ["categorical", "continuous", "periodic",
                                            "categorical", "continuous"]
    assert mixed.task[2].symmetry == 3
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
        "periodic = ('posX:1', 'x:1:2:0'): item 'x:1:2:0': symmetry 0 is not an int >= 1; "
        "allowed: " + roles.PERIODIC_FORMAT,
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


def test_problems_name_every_declaration_with_the_callers_prefix():
    with pytest.raises(roles.RolesError) as error:
        roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "dsprites",
                            categorical=("posX",), periodic=("posX:1", "posY:1", "posY:2"))
    assert error.value.lines("config.data.") == [
        "config.data.periodic = ('posX:1', 'posY:1', 'posY:2'): 'posY' is declared more than "
        "once ('posY:1', 'posY:2'); give it one period",
        "config.data.categorical = ('posX',), config.data.periodic = ('posX:1', 'posY:1', "
        "'posY:2'): 'posX' is declared both categorical and periodic"]
    assert error.value.problems == [line.replace("config.data.", "")
                                    for line in error.value.lines("config.data.")]


def test_a_factor_dropped_at_load_is_named_as_such():
    with pytest.raises(roles.RolesError) as error:
        roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "dsprites", dropped=("colour",),
                            factors=("shape", "colour", "hue"))
    assert error.value.problems == [
        "factors = ('shape', 'colour', 'hue'): 'colour' is not a factor of the data (dropped "
        "at load: constant; factors: shape, scale, orientation, posX, posY)",
        "factors = ('shape', 'colour', 'hue'): 'hue' is not a factor of the data (factors: "
        "shape, scale, orientation, posX, posY)"]


@pytest.mark.parametrize("names", [("x", "x"), ("", "y")])
def test_factor_names_must_be_distinct_and_non_empty(names):
    with pytest.raises(ValueError, match="distinct and non-empty"):
        roles.resolve_roles(names, (np.array([0.0, 1.0]), np.array([0.0, 1.0])))


def test_class_names_are_distinct_when_g_would_merge_them():
    role = roles.resolve_roles(("a",), (np.array([0.0, 1.0, 1.000001]),),
                               categorical=("a",)).task[0]
    assert role.latent_names == ("a=1.0", "a=1.000001")
    assert role.describe() == "a categorical (3 classes: 0.0, 1.0, 1.000001; 2 latents)"
    shape = roles.FactorRole("shape", 0, "categorical", classes=(1.0, 2.0, 3.0))
    assert shape.latent_names == ("shape=2", "shape=3")           # `:g` when it is distinct


ANGLES = np.arange(0.0, 360.0, 30.0)            # 0, 30, ..., 330 degrees


def _angle_roles(values, declaration, layout="plain"):
    return roles.resolve_roles(("angle", "b"), (values, np.array([0.0, 1.0])), layout,
                               periodic=(declaration,))


def test_a_period_the_values_wrap_more_than_once_is_refused():
    with pytest.raises(roles.RolesError) as error:
        _angle_roles(ANGLES, "angle:1")                          # degrees over one turn
    assert error.value.lines("config.data.") == [
        "config.data.periodic = ('angle:1',): item 'angle:1': the values of 'angle' span 330 "
        "(from 0 to 330), 330 periods of 1: they would wrap round the circle more than once; "
        "allowed: a period of at least 330 in the values' units (360 for degrees, 2pi for "
        "radians, 1 for fractions of a turn)"]
    with pytest.raises(roles.RolesError, match="span 390 .* 1.08 periods of 360"):
        _angle_roles(np.arange(0.0, 420.0, 30.0), "angle:360")   # 0..390: past one turn
    # A layout's default that does not fit says where it comes from.
    degrees = DSPRITES_GRID[:2] + (np.linspace(0.0, 360.0, 40),) + DSPRITES_GRID[3:]
    with pytest.raises(roles.RolesError) as error:
        roles.resolve_roles(DSPRITES_NAMES, degrees, "dsprites")
    assert error.value.problems[0].startswith(
        "periodic = ('auto',): the dSprites layout's default 'orientation:2pi' (auto): the "
        "values of 'orientation' span 360 (from 0 to 360), 57.3 periods of 6.28319")


@pytest.mark.parametrize("values,declaration,coverage", [
    (ANGLES, "angle:360", 1.0),
    (ANGLES, "angle:360:4", 1.0),                        # turn 90: 3 steps, turns repeat
    (ANGLES, "angle:360:5", 1.0),                        # turn 72: folds off the grid
    (ANGLES, "angle:360:3", 1.0),
    (ANGLES, "angle:720", 0.5),
    (np.arange(0.0, 390.0, 30.0), "angle:360:2", 1.0),   # 0..360: both ends, one turn
    (np.arange(0.0, 90.0, 10.0), "angle:360:4", 1.0),    # one turn of a square sampled
    (np.arange(0.0, 90.0, 10.0), "angle:360", 0.25),
    (DSPRITES_GRID[2], "angle:2pi", 1.0),
    (DSPRITES_GRID[2], "angle:6.283", 1.0),              # a period typed to 3 decimals
    (DSPRITES_GRID[2], "angle:2pi:13", 1.0),
    (DSPRITES_GRID[2], "angle:2pi:4", 1.0),              # a square: 9.75 steps a turn
    (sprites.factor_values()[2], "angle:1", 1.0),       # the sprite world's declaration
    (sprites.factor_values()[2], "angle:2pi", 1.0 / (2 * np.pi)),   # other units: legal
    (sprites.factor_values()[2], "angle:2pi:4", 2.0 / np.pi),
    (latents.factor_values()[5], "angle:360", (60.0 + 60.0 / 14) / 360),   # -30..30 deg
])
def test_periodic_declarations_that_fit_say_how_much_of_the_circle_they_cover(
        values, declaration, coverage):
    role = _angle_roles(values, declaration).task[0]
    assert role.coverage == pytest.approx(coverage)
    assert role.describe().endswith(f"; values cover {coverage:.0%} of the circle)")


@pytest.mark.parametrize("symmetry", [1, 2, 4, 5, 7])
def test_a_continuous_angle_folds_with_any_symmetry(symmetry):
    values = np.sort(np.random.default_rng(symmetry).uniform(0.0, 360.0, 500))
    role = _angle_roles(values, f"angle:360:{symmetry}").task[0]
    assert role.symmetry == symmetry and role.coverage > 0.98


def test_the_roles_line_names_the_layout_of_the_defaults():
    shapes3d = roles.resolve_roles(latents.FACTOR_NAMES, latents.factor_values(), "shapes3d")
    assert shapes3d.describe().startswith(
        "task factors: floor_hue periodic (period 1, symmetry 1: cos, sin; values cover 100% "
        "of the circle); ")
    assert shapes3d.describe().endswith(
        "-> 9 latents; nuisance factors: none; auto (3D Shapes layout): floor_hue, wall_hue, "
        "object_hue")
    dsprites = roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "dsprites",
                                   periodic=("orientation:2pi",))
    assert dsprites.task[2].coverage == 1.0
    assert dsprites.describe().endswith("; auto (dSprites layout): shape")
    declared = roles.resolve_roles(sprites.FACTOR_NAMES, sprites.factor_values(), "sprites",
                                   categorical=("shape",), periodic=("orientation:1",))
    assert "auto" not in declared.describe()
    assert roles.resolve_roles(DSPRITES_NAMES, DSPRITES_GRID, "plain").describe().endswith(
        "nuisance factors: none")


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
