"""PNG pictures of a training run, drawn with Pillow: a grid of images, and curves on shared axes.

    save_grid("samples.png", images, (28, 28))        # images (n, pixels) in [-1, 1]
    save_curves("losses.png", {"discriminator": d_losses, "generator": g_losses}, "GAN losses", "step")
"""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID_PADDING = 2          # pixels between the cells of a grid and around it
CELL_PIXELS = 32          # small images are scaled up by a whole factor to about this many pixels

CURVES_SIZE = (720, 420)
PLOT_BOX = (70, 40, 700, 370)          # left, top, right, bottom of the axes inside the picture
MAX_POINTS = 300                       # a longer curve is drawn as the means of this many windows
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
TICKS = 5


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


def save_curves(path, curves, title, x_label):
    """Curves {label: one value per step} on shared axes as a PNG, with ticks and a legend."""
    picture = Image.new("RGB", CURVES_SIZE, "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=13)
    left, top, right, bottom = PLOT_BOX
    steps = max(len(values) for values in curves.values())
    if steps == 0:
        raise ValueError("curves: nothing to draw, every curve is empty")
    all_values = np.concatenate([np.asarray(values, np.float64) for values in curves.values()])
    low, high = float(all_values.min()), float(all_values.max())
    if high - low < 1e-12:
        low, high = low - 1, high + 1

    def point(x, y):
        return (left + (right - left) * x / max(steps - 1, 1),
                bottom - (bottom - top) * (y - low) / (high - low))

    draw.rectangle(PLOT_BOX, outline="black")
    for tick in range(TICKS):
        y = low + (high - low) * tick / (TICKS - 1)
        x = (steps - 1) * tick / (TICKS - 1)
        draw.text((left - 6, point(0, y)[1]), f"{y:.3g}", fill="black", font=font, anchor="rm")
        draw.text((point(x, low)[0], bottom + 6), f"{x:.0f}", fill="black", font=font, anchor="mt")
    draw.text(((left + right) / 2, 12), title, fill="black", font=font, anchor="mt")
    draw.text(((left + right) / 2, CURVES_SIZE[1] - 8), x_label, fill="black", font=font, anchor="mb")
    for index, (label, values) in enumerate(curves.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = [point(x, y) for x, y in zip(*window_means(values))]
        draw.line(points + points[-1:], fill=colour, width=2)
        key_y = top + 10 + 18 * index
        draw.line([(right - 150, key_y), (right - 125, key_y)], fill=colour, width=3)
        draw.text((right - 118, key_y), label, fill="black", font=font, anchor="lm")
    picture.save(path, format="PNG")
