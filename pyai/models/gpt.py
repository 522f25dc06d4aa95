"""GPT: a decoder-only transformer (GPT-2's layout).

    model = GPT(vocab_size=96, block_size=64, layers=2, heads=4, channels=64)
    loss = model.train_step(ids, targets)          # forward, cross-entropy, backward
    Adam(3e-3).step(model)
    text_ids = model.generate(prompt_ids, 200, temperature=0.8, top_k=10, rng=rng)
    model.save("gpt.npz", optimizer, metadata={...});  model, metadata = GPT.load("gpt.npz", optimizer)

logits = head(ln_f(blocks(wte[ids] + wpe[positions]))), the head being wte's transpose (`tied`,
GPT-2's choice) or a Dense layer of its own. `save` and `load` write and read `pyai.checkpoint`'s
format; the step loop is `pyai.training.train_gpt`.
"""

import numpy as np

from pyai import checkpoint, ops, warmup
from pyai.checks import fits_in_memory, positive_int, real_number
from pyai.nn import Composite, Dense, Embedding, FlatParameters, LayerNorm, TransformerBlock


class GPT(Composite):
    """Token and position embeddings, `layers` causal TransformerBlocks, a final LayerNorm, and a
    head to vocabulary logits. Weights are drawn from `seed`."""

    # the ops a training step needs of a backend (it uses fused ones too, where the backend has them)
    TRAINING_OPS = ("linear", "matmul", "attention", "attention_grad", "layer_norm", "layer_norm_grad", "gelu",
                    "gelu_grad", "embedding", "embedding_grad", "softmax_cross_entropy", "adam_update")

    def __init__(self, vocab_size, block_size, layers=2, heads=4, channels=64, tied=True, epsilon=1e-5, seed=0):
        self.config = {"vocab_size": positive_int("vocab_size", vocab_size),
                       "block_size": positive_int("block_size", block_size),
                       "layers": positive_int("layers", layers), "heads": positive_int("heads", heads),
                       "channels": positive_int("channels", channels), "tied": bool(tied),
                       "epsilon": real_number("epsilon", epsilon, low=0.0, low_open=True), "seed": seed}
        v, t, c = vocab_size, block_size, channels   # 12 C^2 + 13 C per block; wte, wpe, ln_f, head
        fits_in_memory("layers, channels", (v + t) * c + layers * (12 * c * c + 13 * c) + 2 * c
                       + (0 if tied else c * v + v), "a GPT")
        rng = np.random.default_rng(seed)
        self.wte = Embedding(vocab_size, channels, rng)
        self.wpe = Embedding(block_size, channels, rng)
        self.blocks = [TransformerBlock(channels, heads, causal=True, epsilon=epsilon, rng=rng)
                       for _ in range(layers)]
        self.ln_f = LayerNorm(channels, epsilon)
        self.lm_head = None if tied else Dense(channels, vocab_size, rng=rng)
        self.x = None
        self.flat = FlatParameters(self)
        warmup.expect_training("gpt")

    def __repr__(self):
        return "GPT(" + ", ".join(f"{key}={value!r}" for key, value in self.config.items()) + ")"

    def children(self):
        head = [] if self.lm_head is None else [("lm_head", self.lm_head)]
        blocks = [(f"h.{index}", block) for index, block in enumerate(self.blocks)]
        return [("wte", self.wte), ("wpe", self.wpe), *blocks, ("ln_f", self.ln_f), *head]

    # ids is (B, T) integers, T <= block_size -> logits is (B, T, vocab_size)
    def forward(self, ids):
        ids = np.asarray(ids)
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.config["block_size"]:
            raise ValueError(f"ids: expected shape (B, T) with 1 <= T <= {self.config['block_size']}, "
                             f"got {ids.shape}")
        x = self.wte.forward(ids)   # a new array (wte keeps it for its shape): positions add in place
        x += self.wpe.forward(np.arange(ids.shape[1]))
        for block in self.blocks:
            x = block.forward(x)
        self.x = self.ln_f.forward(x).reshape(-1, self.config["channels"])
        if self.lm_head is None:
            logits = ops.matmul(self.x, self.wte.table, transpose_b=True)
        else:
            logits = self.lm_head.forward(self.x)
        return logits.reshape(*ids.shape, -1)

    # dlogits is (B, T, vocab_size) -> None; fills every parameter's gradient
    def backward(self, dlogits):
        if self.x is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        rows = np.reshape(dlogits, (len(self.x), -1))
        if self.lm_head is None:
            dx = ops.matmul(rows, self.wte.table)
            head_grad = ops.matmul(rows, self.x, transpose_a=True)   # (V, C), added to wte's below
        else:
            dx = self.lm_head.backward(rows)
        dx = self.ln_f.backward(dx.reshape(*np.shape(dlogits)[:2], -1))
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        self.wte.backward(dx)
        self.wpe.backward(dx.sum(axis=0))
        if self.lm_head is None:
            self.wte.grad_table += head_grad

    def train_step(self, ids, targets):
        """Forward, the mean cross-entropy over B * T next-token targets (B, T), and backward; the loss."""
        logits = self.forward(ids)
        loss, dlogits = ops.softmax_cross_entropy(logits.reshape(-1, logits.shape[-1]), np.ravel(targets))
        self.backward(dlogits.reshape(logits.shape))
        return loss

    def loss(self, ids, targets):
        """The mean cross-entropy of the next-token targets (B, T), without backward."""
        logits = self.forward(ids)
        return ops.softmax_cross_entropy(logits.reshape(-1, logits.shape[-1]), np.ravel(targets))[0]

    def generate(self, ids, new_tokens, *, temperature=1.0, top_k=None, rng=None):
        """`ids` (T,) followed by `new_tokens` sampled one at a time, each from the softmax of the
        last logits / temperature over the top_k most likely tokens (all when None)."""
        temperature = real_number("temperature", temperature, low=0.0, low_open=True)
        rng = np.random.default_rng() if rng is None else rng
        ids = list(np.asarray(ids, dtype=np.int64))
        for _ in range(new_tokens):
            context = np.array(ids[-self.config["block_size"]:])[None]
            logits = self.forward(context)[0, -1] / temperature
            if top_k is not None and top_k < len(logits):
                logits[logits < np.sort(logits)[-top_k]] = -np.inf
            probabilities = np.exp(logits - logits.max())
            ids.append(rng.choice(len(logits), p=probabilities / probabilities.sum()))
        return np.array(ids, dtype=np.int64)

    def save(self, path, optimizer=None, metadata=None):
        """Config, weights, `metadata` (a JSON-able dict) and optimizer state (when given), atomically."""
        checkpoint.save(path, self, optimizer, metadata=metadata)

    @classmethod
    def load(cls, path, optimizer=None):
        """(model, metadata) from `save`'s file; restores `optimizer`'s state when given."""
        return checkpoint.load(path, cls, optimizer)
