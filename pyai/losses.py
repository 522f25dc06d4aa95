"""Losses: `forward(prediction, target) -> float` saves its inputs; `backward() -> dprediction`.

Both reduce by the mean over every element, as Keras does for (batch, outputs) arrays.
"""

from pyai import ops


class Loss:
    def __init__(self):
        self.prediction = None
        self.target = None

    def __call__(self, prediction, target):
        return self.forward(prediction, target)

    def saved(self):
        if self.prediction is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return self.prediction, self.target


class MSE(Loss):
    """mean((prediction - target)^2)."""

    def __repr__(self):
        return "MSE()"

    # prediction, target are the same shape -> a Python float
    def forward(self, prediction, target):
        loss = ops.mse(prediction, target)
        self.prediction, self.target = prediction, target
        return loss

    # -> dprediction, the shape of prediction
    def backward(self):
        return ops.mse_grad(*self.saved())


class BinaryCrossentropy(Loss):
    """Mean binary cross-entropy; prediction holds probabilities, or logits with from_logits=True."""

    def __init__(self, from_logits=False):
        super().__init__()
        self.from_logits = bool(from_logits)

    def __repr__(self):
        return f"BinaryCrossentropy(from_logits={self.from_logits})"

    # prediction, target are the same shape -> a Python float
    def forward(self, prediction, target):
        loss = ops.binary_crossentropy(prediction, target, from_logits=self.from_logits)
        self.prediction, self.target = prediction, target
        return loss

    # -> dprediction, the shape of prediction
    def backward(self):
        return ops.binary_crossentropy_grad(*self.saved(), from_logits=self.from_logits)
