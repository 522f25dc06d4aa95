"""PNG pictures of a training run: a grid of images (Pillow), and curves on shared axes (matplotlib).

    save_grid("samples.png", images, (28, 28))        # images (n, pixels) in [-1, 1]
    save_curves("losses.png", {"discriminator": d_losses, "generator": g_losses}, "GAN losses", "step")
"""

import math
import os

import numpy as np
from PIL import Image

GRID_PADDING = 2          # pixels between the cells of a grid and around it
CELL_PIXELS = 32          # small images are scaled up by a whole factor to about this many pixels

CURVES_SIZE = (720, 420)               # pixels of a figure
DPI = 100
MAX_POINTS = 300                       # a longer curve is drawn as the means of this many windows


def grid_layout(count, image_shape):
    """(columns, rows, scale) of a grid of `count` images: about square, each image scaled up."""
    columns = math.ceil(math.sqrt(count))
    return columns, math.ceil(count / columns), max(1, CELL_PIXELS // max(image_shape))


def grid_size(count, image_shape):
    """(width, height) in pixels of the PNG `save_grid` writes for `count` images."""
    columns, rows, scale = grid_layout(count, image_shape)
    height, width = (side * scale for side in image_shape)
    return (columns * (width + GRID_PADDING) + GRID_PADDING, rows * (height + GRID_PADDING) + GRID_PADDING)


def save_grid(path, images, image_shape):
    """Images (n, pixels) with values in [-1, 1] and image_shape (rows, columns) as one grey PNG,
    white strokes on black as in MNIST, row by row."""
    height, width = image_shape
    images = np.asarray(images, dtype=np.float32).reshape(-1, height, width)
    grey = np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8)
    columns, _, scale = grid_layout(len(images), image_shape)
    picture = Image.new("L", grid_size(len(images), image_shape), color=64)
    for index, image in enumerate(grey):
        row, column = divmod(index, columns)
        cell = Image.fromarray(image).resize((width * scale, height * scale), Image.Resampling.NEAREST)
        picture.paste(cell, (GRID_PADDING + column * (width * scale + GRID_PADDING),
                             GRID_PADDING + row * (height * scale + GRID_PADDING)))
    picture.save(path, format="PNG")


def window_means(values):
    """(x, y): the mean of each of at most MAX_POINTS equal windows of `values`, at its centre."""
    values = np.asarray(values, dtype=np.float64)
    window = max(1, math.ceil(len(values) / MAX_POINTS))
    starts = np.arange(0, len(values), window)
    ends = np.minimum(starts + window, len(values))
    return (starts + ends - 1) / 2, np.add.reduceat(values, starts) / (ends - starts)


def new_figure(size=CURVES_SIZE):
    """A matplotlib Figure of `size` pixels drawn by the Agg backend, whatever pyplot's backend
    is: no display, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path):
    """Write `figure` as a PNG at `path`, atomically (a reader never sees half a file)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    figure.savefig(temporary, format="png")
    os.replace(temporary, path)


def save_curves(path, curves, title, x_label):
    """Curves {label: one value per step} on shared axes as a PNG: each step faintly, and the
    means of at most MAX_POINTS windows as the line."""
    if max((len(values) for values in curves.values()), default=0) == 0:
        raise ValueError("curves: nothing to draw, every curve is empty")
    figure = new_figure()
    axes = figure.add_subplot()
    for label, values in curves.items():
        values = np.asarray(values, dtype=np.float64)
        line, = axes.plot(*window_means(values), label=label, linewidth=1.8)
        if len(values) > MAX_POINTS:
            axes.plot(values, color=line.get_color(), alpha=0.2, linewidth=0.6)
    axes.set_title(title)
    axes.set_xlabel(x_label)
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path)
