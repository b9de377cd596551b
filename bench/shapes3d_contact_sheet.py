"""Contact sheet of factor sweeps rendered by `sdis_tf.data.render`.

Row k sweeps factor k over (up to 10 of) its grid values, the others fixed at
a reference point; a last row shows the four shapes at two azimuths. Writes a
PNG (default docs/images/shapes3d_render_sweeps.png).

    .venv/bin/python bench/shapes3d_contact_sheet.py [--out PATH] [--zoom 2]
"""

import argparse

import numpy as np
from PIL import Image

from sdis_tf.data import latents, render

REFERENCE = np.array([0.0, 0.5, 0.8, 1.0, 0.0, -30.0])


def contact_sheet() -> np.ndarray:
    """uint8 image [7*64, 10*64, 3]: one row per factor sweep, plus shapes x azimuths."""
    rows = []
    for k, values in enumerate(latents.factor_values()):
        picks = values[np.linspace(0, len(values) - 1, min(10, len(values))).round().astype(int)]
        factors = np.tile(REFERENCE, (10, 1))
        factors[: len(picks), k] = picks
        images = render.render(factors).numpy()
        images[len(picks):] = 1.0
        rows.append(np.concatenate(list(images), axis=1))
    factors = np.tile(REFERENCE, (10, 1))
    factors[:8, 4] = np.repeat(np.arange(4), 2)
    factors[:8, 5] = np.tile([-30.0, 30.0], 4)
    factors[:8, 2] = np.repeat([0.0, 0.3, 0.6, 0.9], 2)
    images = render.render(factors).numpy()
    images[8:] = 1.0
    rows.append(np.concatenate(list(images), axis=1))
    return (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/shapes3d_render_sweeps.png")
    parser.add_argument("--zoom", type=int, default=2)
    args = parser.parse_args()
    sheet = contact_sheet()
    image = Image.fromarray(sheet)
    if args.zoom > 1:
        image = image.resize((sheet.shape[1] * args.zoom, sheet.shape[0] * args.zoom),
                             Image.NEAREST)
    image.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
