"""GPT: a decoder-only transformer (GPT-2's layout), its checkpoints, and its Keras twin.

    model = GPT(vocab_size=96, block_size=64, layers=2, heads=4, channels=64)
    loss = model.train_step(ids, targets)          # forward, cross-entropy, backward
    Adam(3e-3).step(model)
    text_ids = model.generate(prompt_ids, 200, temperature=0.8, top_k=10, rng=rng)
    model.save("gpt.npz", optimizer, metadata={...});  model, metadata = GPT.load("gpt.npz", optimizer)

logits = head(ln_f(blocks(wte[ids] + wpe[positions]))), the head being wte's transpose (`tied`,
GPT-2's choice) or a Dense layer of its own. A checkpoint is an .npz file (see `pyai.io`): "config"
and "metadata" as JSON strings, "weights/<name>" and, optionally, "optimizer/<name>".
"""

import json

import numpy as np
from tqdm import tqdm

from pyai import io, ops
from pyai.checks import positive_int, real_number
from pyai.nn import Composite, Dense, Embedding, LayerNorm, TransformerBlock
from pyai.text import random_batch

HELD_OUT_BATCHES = 8


class GPT(Composite):
    """Token and position embeddings, `layers` causal TransformerBlocks, a final LayerNorm, and a
    head to vocabulary logits. Weights are drawn from `seed`."""

    def __init__(self, vocab_size, block_size, layers=2, heads=4, channels=64, tied=True, epsilon=1e-5, seed=0):
        self.config = {"vocab_size": positive_int("vocab_size", vocab_size),
                       "block_size": positive_int("block_size", block_size),
                       "layers": positive_int("layers", layers), "heads": positive_int("heads", heads),
                       "channels": positive_int("channels", channels), "tied": bool(tied),
                       "epsilon": real_number("epsilon", epsilon, low=0.0, low_open=True), "seed": seed}
        rng = np.random.default_rng(seed)
        self.wte = Embedding(vocab_size, channels, rng)
        self.wpe = Embedding(block_size, channels, rng)
        self.blocks = [TransformerBlock(channels, heads, causal=True, epsilon=epsilon, rng=rng)
                       for _ in range(layers)]
        self.ln_f = LayerNorm(channels, epsilon)
        self.lm_head = None if tied else Dense(channels, vocab_size, rng=rng)
        self.x = None

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
        x = self.wte.forward(ids) + self.wpe.forward(np.arange(ids.shape[1]))
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
        arrays = {"config": np.array(json.dumps(self.config)), "metadata": np.array(json.dumps(metadata or {}))}
        arrays.update({f"weights/{name}": array for name, array in self.parameters()})
        if optimizer is not None:
            arrays.update({f"optimizer/{name}": array for name, array in optimizer.state().items()})
        io.save(path, arrays)

    @classmethod
    def load(cls, path, optimizer=None):
        """(model, metadata) from `save`'s file; restores `optimizer`'s state when given."""
        arrays = io.load(path)
        config, metadata = read_json(path, arrays, "config"), read_json(path, arrays, "metadata")
        try:
            model = cls(**config)
        except (TypeError, ValueError) as error:
            raise io.CheckpointError(f"checkpoint {path}: its config does not make a GPT ({error})") from error
        weights = {name.removeprefix("weights/"): array
                   for name, array in arrays.items() if name.startswith("weights/")}
        io.check(path, weights, dict(model.parameters()))
        if optimizer is not None:
            try:
                optimizer.load_state({name.removeprefix("optimizer/"): array
                                      for name, array in arrays.items() if name.startswith("optimizer/")})
            except ValueError as error:
                raise io.CheckpointError(f"checkpoint {path}: {error}") from error
        for name, parameter in model.parameters():
            parameter[...] = weights[name]
        return model, metadata


def read_json(path, arrays, key):
    try:
        value = json.loads(str(arrays[key]))
    except KeyError:
        raise io.CheckpointError(f"checkpoint {path}: has no {key!r}; is it a pyai GPT checkpoint?") from None
    except ValueError as error:
        raise io.CheckpointError(f"checkpoint {path}: {key!r} is not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise io.CheckpointError(f"checkpoint {path}: {key!r} is not a JSON object")
    return value


class Training:
    """Where a run stands besides the model: steps done, a (step, training loss, held-out loss) row
    per evaluation, and the random generator that draws every batch. `state()` is JSON-able."""

    def __init__(self, seed=0, batch_size=32):
        self.seed = seed
        self.batch_size = positive_int("batch_size", batch_size)
        self.step = 0
        self.history = []
        self.rng = np.random.default_rng(seed)

    def state(self):
        return {"seed": self.seed, "batch_size": self.batch_size, "step": self.step, "history": self.history,
                "rng": self.rng.bit_generator.state}

    @classmethod
    def from_state(cls, state):
        training = cls(state["seed"], state["batch_size"])
        training.step, training.history = int(state["step"]), [list(row) for row in state["history"]]
        training.rng.bit_generator.state = state["rng"]
        return training


def held_out_loss(model, ids, batch_size):
    """The mean loss over HELD_OUT_BATCHES windows of `ids`, the same windows every call."""
    rng = np.random.default_rng(0)
    block_size = min(model.config["block_size"], len(ids) - 1)
    return float(np.mean([model.loss(*random_batch(ids, batch_size, block_size, rng))
                          for _ in range(HELD_OUT_BATCHES)]))


def train(model, optimizer, train_ids, held_out_ids, training, *, steps, eval_every, after_eval=None,
          progress=True):
    """Adam (or any optimizer) steps on random windows of `train_ids` until `training.step` reaches
    `steps`; every `eval_every` steps and at the end, a history row and after_eval(training)."""
    eval_every = positive_int("eval_every", eval_every)
    with tqdm(total=steps, initial=training.step, desc="training gpt", unit="step",
              disable=not progress) as bar:
        while training.step < steps:
            x, y = random_batch(train_ids, training.batch_size, model.config["block_size"], training.rng)
            loss = model.train_step(x, y)
            optimizer.step(model)
            training.step += 1
            if training.step % eval_every == 0 or training.step == steps:
                held_out = held_out_loss(model, held_out_ids, training.batch_size)
                training.history.append([training.step, loss, held_out])
                bar.set_postfix(loss=f"{loss:.3f}", held_out=f"{held_out:.3f}", refresh=False)
                if after_eval is not None:
                    after_eval(training)
            bar.update()


# ---- The same GPT in Keras: the peer pyai is validated and timed against (needs tensorflow) ----

def to_keras(model):
    """(keras_model, variables): a Keras model computing `model`'s logits from (B, T) ids, with its
    weights copied, and {pyai parameter name: the Keras variable holding it} (reshape to compare)."""
    import keras

    config = model.config
    heads, channels = config["heads"], config["channels"]

    def layer_norm():
        return keras.layers.LayerNormalization(epsilon=config["epsilon"])

    def gelu(x):
        return keras.activations.gelu(x, approximate=True)

    class KerasGPT(keras.Model):
        def __init__(self):
            super().__init__()
            self.wte = keras.layers.Embedding(config["vocab_size"], channels)
            self.wpe = keras.layers.Embedding(config["block_size"], channels)
            self.blocks = [(layer_norm(), keras.layers.MultiHeadAttention(heads, channels // heads),
                            layer_norm(), keras.layers.Dense(4 * channels, activation=gelu),
                            keras.layers.Dense(channels)) for _ in range(config["layers"])]
            self.ln_f = layer_norm()
            self.lm_head = None if config["tied"] else keras.layers.Dense(config["vocab_size"])

        def call(self, ids):
            x = self.wte(ids) + self.wpe(keras.ops.arange(keras.ops.shape(ids)[1]))
            for ln_1, attn, ln_2, fc, proj in self.blocks:
                h = ln_1(x)
                x = x + attn(h, h, use_causal_mask=True)
                x = x + proj(fc(ln_2(x)))
            x = self.ln_f(x)
            return x @ keras.ops.transpose(self.wte.embeddings) if self.lm_head is None else self.lm_head(x)

    twin = KerasGPT()
    twin(np.zeros((1, 1), dtype=np.int32))   # builds the variables
    variables = keras_variables(twin, model)
    for name, parameter in model.parameters():
        variables[name].assign(parameter.reshape(variables[name].shape))
    return twin, variables


def keras_variables(twin, model):
    """{pyai name: Keras variable}. Keras's MultiHeadAttention keeps its projections in EinsumDense
    layers (_query_dense, ...; private names, stable in Keras 3) with (C, H, D) and (H, D, C) kernels."""
    variables = {"wte.table": twin.wte.embeddings, "wpe.table": twin.wpe.embeddings,
                 "ln_f.gamma": twin.ln_f.gamma, "ln_f.beta": twin.ln_f.beta}
    if twin.lm_head is not None:
        variables.update({"lm_head.weight": twin.lm_head.kernel, "lm_head.bias": twin.lm_head.bias})
    for index, (ln_1, attn, ln_2, fc, proj) in enumerate(twin.blocks):
        prefix = f"h.{index}"
        variables.update({f"{prefix}.ln_1.gamma": ln_1.gamma, f"{prefix}.ln_1.beta": ln_1.beta,
                          f"{prefix}.ln_2.gamma": ln_2.gamma, f"{prefix}.ln_2.beta": ln_2.beta,
                          f"{prefix}.mlp.0.weight": fc.kernel, f"{prefix}.mlp.0.bias": fc.bias,
                          f"{prefix}.mlp.2.weight": proj.kernel, f"{prefix}.mlp.2.bias": proj.bias})
        for name, dense in (("query", attn._query_dense), ("key", attn._key_dense),
                            ("value", attn._value_dense), ("output", attn._output_dense)):
            variables.update({f"{prefix}.attn.{name}.weight": dense.kernel,
                              f"{prefix}.attn.{name}.bias": dense.bias})
    missing = set(dict(model.parameters())) ^ set(variables)
    if missing:
        raise ValueError(f"to_keras: the Keras twin and {model!r} differ in {sorted(missing)}")
    return variables
