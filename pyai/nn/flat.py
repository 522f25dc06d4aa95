"""One contiguous float32 buffer for all of a model's parameters, and one for their gradients.

    model.flat = FlatParameters(model)    # MLP, GPT and each of the GAN's networks do this when built
    model.flat.parameters                 # (size,) float32: every weight and bias is a view into it
    model.flat.gradients                  # (size,) float32: backward writes every gradient into it

Parameters lie in `model.slots()`'s order, each at its own offset, and `split(array)` cuts any
buffer of that size the same way, which is how Adam keeps its two moments flat too. With the
model's arrays in one place, an optimizer step is one fused pass over the flat buffers
(`pyai.optim`), and data-parallel training averages every gradient with a few large allreduce
calls over `flat.gradients` (`pyai.distributed`), not one call per tensor.
"""

import numpy as np

LINE = 16   # floats in a 64-byte cache line: every tensor starts one, so a product writing a
            # gradient view stores whole lines (the floats between tensors stay 0, and Adam
            # leaves a parameter of gradient 0 and moments 0 at 0); but a layer's bias follows its
            # weight directly (follows_directly)


def aligned_zeros(size):
    """(size,) float32 zeros, the first on a 64-byte boundary."""
    raw = np.zeros(size + LINE - 1, np.float32)
    skip = -raw.ctypes.data % (4 * LINE) // 4
    return raw[skip:skip + size]


def follows_directly(previous, slot, shape, previous_shape):
    """Whether a parameter lies right after the previous one, not at the next cache line: a
    layer's 1-d parameter after its 2-d one of rows as long (a Dense layer's bias after its
    weight), so that their gradients are one (in + 1, out) matrix, which the weight gradient's
    product writes whole, the bias gradient its last row (pyai.nn.layers.back_to_back)."""
    return (previous is not None and previous[1] is slot[1] and len(shape) == 1 and len(previous_shape) == 2
            and previous_shape[1] == shape[0])


class FlatParameters:
    """Moves `model`'s parameters into one buffer and gives each layer views of a gradient buffer."""

    def __init__(self, model):
        slots = model.slots()
        shapes = [np.shape(getattr(layer, attribute)) for _, layer, attribute in slots]
        sizes = [int(np.prod(shape)) for shape in shapes]
        self.names = [name for name, _, _ in slots]
        self.shapes = shapes
        self.offsets, end = [], 0
        for i, (slot, shape, size) in enumerate(zip(slots, shapes, sizes)):
            joined = i > 0 and follows_directly(slots[i - 1], slot, shape, shapes[i - 1])
            start = end if joined else -(-end // LINE) * LINE
            self.offsets.append((start, start + size))
            end = start + size
        self.size = -(-end // LINE) * LINE
        self.parameters = aligned_zeros(self.size)
        self.gradients = aligned_zeros(self.size)
        self.parameter_views = self.split(self.parameters)
        self.gradient_views = self.split(self.gradients)
        for (_, layer, attribute), view, gradient_view in zip(slots, self.parameter_views, self.gradient_views):
            view[...] = getattr(layer, attribute)
            setattr(layer, attribute, view)
            layer.gradient_views = {**layer.gradient_views, attribute: gradient_view}

    def __repr__(self):
        return f"FlatParameters({len(self.names)} tensors, {self.size:,} floats)"

    def split(self, flat):
        """Views of `flat` (size,) shaped as the parameters, in their order."""
        return [flat[start:end].reshape(shape) for (start, end), shape in zip(self.offsets, self.shapes)]

    def gather(self, model):
        """Check that `model`'s parameters are still this buffer's views and that backward gave
        each a gradient, and copy into the gradient buffer any gradient that backward did not
        write there (a caller's own array)."""
        for (name, parameter), (_, gradient), view, gradient_view in zip(
                model.parameters(), model.gradients(), self.parameter_views, self.gradient_views, strict=True):
            if gradient is None:
                raise RuntimeError(f"parameter {name!r} has no gradient: call backward before step")
            if parameter is not view:
                raise RuntimeError(f"parameter {name!r} was replaced by an array outside the model's flat "
                                   f"buffer; update it in place (parameter[...] = new) instead")
            if gradient is not gradient_view:
                gradient_view[...] = gradient
