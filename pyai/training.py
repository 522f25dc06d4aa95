"""Training loops for pyai's models, and where a run stands between them.

    history = fit(mlp, BinaryCrossentropy(from_logits=True), Adam(0.01), x, targets, epochs=30, batch_size=32)
    train_gan(gan, images, Training(seed=0), epochs=200, after_epoch=save)
    train_gpt(gpt, Adam(3e-3), train_ids, held_out_ids, Training(seed=0, batch_size=32), steps=2000,
              eval_every=100, after_eval=save)

`fit` and `train_gan` run epochs of shuffled batches; `train_gpt` runs steps on random windows of a
token stream, with a held-out evaluation every `eval_every` steps. The GAN and GPT loops keep their
progress in a `Training`, which `pyai.checkpoint` saves and restores, so a run resumed from a
checkpoint draws the same batches and noise as one that never stopped. The hooks (`after_epoch`,
`after_eval`) are where callers save checkpoints and pictures.

Under mpiexec every loop trains data-parallel (`pyai.distributed`): each process takes its rows of
every global batch, the losses in the history are the global batch's, and only rank 0 shows
progress bars.

A loss or a weight that becomes NaN or infinite (a learning rate far too high, say) stops every
loop with TrainingDiverged, before the hook runs, so a checkpoint saved by the hook is always one
of finite weights: the last good one stays on disk.
"""

import math

import numpy as np

from pyai import distributed
from pyai.checks import as_float32, positive_int
from pyai.data import check_finite
from pyai.progress import bar as progress_bar
from pyai.text import random_batch

GAN_HISTORY_COLUMNS = ("discriminator_loss", "generator_loss", "real_accuracy", "fake_accuracy")
HELD_OUT_BATCHES = 8


def tqdm(*args, **kwargs):
    """tqdm's progress bar, imported when a loop starts: `import pyai` works without tqdm (a GPU
    machine installed with --no-deps), and only the training loops need it."""
    from tqdm import tqdm as progress_bar
    return progress_bar(*args, **kwargs)


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite: the run cannot go on."""


def check_loss(loss, where):
    if not math.isfinite(loss):
        raise TrainingDiverged(f"training diverged at {where}: the loss is {loss}; "
                               f"try a lower learning rate")


def check_weights(model, where, optimizers=()):
    """Every parameter of `model` and every array of the optimizers' states (Adam's moments, whose
    squares overflow first) finite, or TrainingDiverged naming the first that is not."""
    arrays = [(f"parameter {name!r}", parameter) for name, parameter in model.parameters()]
    for optimizer in optimizers:
        arrays += [(f"optimizer state {key!r}", array) for key, array in optimizer.state().items()]
    for name, array in arrays:
        if np.asarray(array).dtype.kind == "f" and not np.isfinite(array).all():
            raise TrainingDiverged(f"training diverged at {where}: {name} holds NaN or infinity; "
                                   f"try a lower learning rate")


class Training:
    """Where a run stands besides the model and its optimizers: epochs and steps done, the history
    (a row per GAN step, or per GPT evaluation), and the random generator that draws every shuffle,
    batch and noise. `state()` is JSON-able; the history is saved beside it as an array."""

    def __init__(self, seed=0, batch_size=64):
        self.seed = seed
        self.batch_size = positive_int("batch_size", batch_size)
        self.epoch = 0
        self.step = 0
        self.history = []
        self.rng = np.random.default_rng(seed)

    def state(self):
        return {"seed": self.seed, "batch_size": self.batch_size, "epoch": self.epoch, "step": self.step,
                "rng": self.rng.bit_generator.state}

    def load_state(self, state, history):
        """Restore what `state()` returned and the history rows; nothing changes unless all of it
        fits (KeyError, TypeError or ValueError otherwise)."""
        batch_size = positive_int("batch_size", state["batch_size"])
        epoch, step = int(state["epoch"]), int(state["step"])
        if epoch < 0 or step < 0:
            raise ValueError(f"epoch {epoch} and step {step}: expected counts >= 0")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self.seed, self.batch_size, self.epoch, self.step, self.rng = state["seed"], batch_size, epoch, step, rng
        self.history = [list(row) for row in history]


def shuffled_batches(count, batch_size, rng, *, full_only=False):
    """One epoch's batches: index arrays cutting a fresh permutation of range(count) into runs of
    `batch_size`, the last one shorter unless `full_only` leaves its rest to the next shuffle."""
    order = rng.permutation(count)
    end = count - count % batch_size if full_only else count
    return [order[start:start + batch_size] for start in range(0, end, batch_size)]


def batch_gradients(model, loss, x, targets):
    """The loss of one process's rows of a batch, after backward has filled the gradients; a
    process without rows (in a last batch smaller than the process count) adds zero to both."""
    if len(x) == 0:
        model.flat.gradients[...] = 0
        return 0.0
    batch_loss = loss(model.forward(x), targets)
    model.backward(loss.backward(), input_gradient=False)
    return batch_loss


def batch_step(model, loss, optimizer, x, targets, batch, when):
    """One optimizer step on the rows `batch` of x and targets; returns the batch's loss, checked
    finite before the step. In one process, backward and the step run together where the
    optimizer can (Adam.backward_and_step steps each Dense layer as its gradient is made); under
    mpiexec, each process's gradients are averaged first."""
    world = distributed.world()
    if world.size > 1 or not hasattr(optimizer, "backward_and_step"):
        rows = batch[world.shard(len(batch))]
        (batch_loss,) = world.mean([batch_gradients(model, loss, x[rows], targets[rows])])
        check_loss(batch_loss, when)
        optimizer.step(model)
        return batch_loss
    batch_loss = loss(model.forward(x[batch]), targets[batch])
    check_loss(batch_loss, when)
    optimizer.backward_and_step(model, loss.backward(), input_gradient=False)
    return batch_loss


def fit(model, loss, optimizer, x, targets, *, epochs, batch_size, seed=0, progress=True):
    """Mini-batch training, shuffled each epoch; returns the mean loss of each epoch.

    x is (n, inputs), targets is (n, outputs). A tqdm bar shows the epochs with the last epoch's loss.
    """
    x = check_finite("x", as_float32("x", x, ndim=2))
    targets = check_finite("targets", as_float32("targets", targets, ndim=2))
    if len(targets) != len(x):
        raise ValueError(f"targets: expected {len(x)} rows, one per row of x, got {len(targets)}")
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    world = distributed.world()
    world.check_batch("batch_size", min(batch_size, len(x)))
    distributed.broadcast_parameters(model)
    progress = progress and world.is_root()
    rng = np.random.default_rng(seed)
    history = []
    with progress_bar(range(epochs), desc="training", unit="epoch", disable=not progress) as bar:
        for _ in bar:
            total = 0.0
            for batch in shuffled_batches(len(x), batch_size, rng):
                total += batch_step(model, loss, optimizer, x, targets, batch, f"epoch {len(history) + 1}") * len(batch)
            check_weights(model, f"the end of epoch {len(history) + 1}", [optimizer])
            history.append(total / len(x))
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history


def train_gan(gan, images, training, *, epochs, progress=True, after_epoch=None):
    """Train `gan` on `images` (n, pixels) in [-1, 1] until `training.epoch` reaches `epochs`.

    Each epoch takes n // batch_size full shuffled batches, with fresh noise for both updates, and
    adds a GAN_HISTORY_COLUMNS row per step; after_epoch(training) runs after each epoch. `gan` may
    be anything with noise_dim, pixels and GAN.train_step's signature (a Keras twin).
    """
    images = check_finite("images", as_float32("images", images, ndim=2))
    if images.shape[1] != gan.pixels:
        raise ValueError(f"images: expected {gan.pixels} pixels per image, got shape {images.shape}")
    world = distributed.world()
    size = world.check_batch("batch_size", training.batch_size)
    steps = len(images) // size
    if steps == 0:
        raise ValueError(f"images: {len(images)} images do not fill one batch of {size}")
    noise_shape = (size, gan.noise_dim)
    distributed.broadcast_parameters(gan)
    progress = progress and world.is_root()
    with progress_bar(total=epochs * steps, initial=training.epoch * steps, desc="training gan", unit="step",
              disable=not progress) as bar:
        while training.epoch < epochs:
            for batch in shuffled_batches(len(images), size, training.rng, full_only=True):
                noise = training.rng.standard_normal(noise_shape, dtype=np.float32)
                generator_noise = training.rng.standard_normal(noise_shape, dtype=np.float32)
                rows = world.shard(size)
                result = gan.train_step(images[batch[rows]], noise[rows], generator_noise[rows])
                result = dict(zip(GAN_HISTORY_COLUMNS, world.mean([result[key] for key in GAN_HISTORY_COLUMNS])))
                for column in ("discriminator_loss", "generator_loss"):
                    check_loss(result[column], f"step {training.step + 1} ({column})")
                training.history.append([result[column] for column in GAN_HISTORY_COLUMNS])
                training.step += 1
                bar.set_postfix(epoch=training.epoch + 1, d_loss=f"{result['discriminator_loss']:.3f}",
                                g_loss=f"{result['generator_loss']:.3f}", refresh=False)
                bar.update()
            if hasattr(gan, "parameters"):   # a Keras twin keeps its weights to itself
                check_weights(gan, f"the end of epoch {training.epoch + 1}", gan.optimizers().values())
            training.epoch += 1
            bar.refresh()   # on a terminal a redraw; in a file or log, the epoch's line
            if after_epoch is not None:
                after_epoch(training)


def held_out_loss(model, ids, batch_size):
    """The mean loss over HELD_OUT_BATCHES windows of `ids`, the same windows every call; each
    process takes its rows of each batch."""
    rng = np.random.default_rng(0)
    block_size = min(model.config["block_size"], len(ids) - 1)
    world = distributed.world()
    losses = []
    for _ in range(HELD_OUT_BATCHES):
        x, y = random_batch(ids, batch_size, block_size, rng)
        rows = world.shard(len(x))
        losses.append(model.loss(x[rows], y[rows]))
    return float(np.mean(world.mean(losses)))


def train_gpt(model, optimizer, train_ids, held_out_ids, training, *, steps, eval_every, after_eval=None,
              progress=True):
    """Optimizer steps on random windows of `train_ids` until `training.step` reaches `steps`; every
    `eval_every` steps and at the end, a (step, training loss, held-out loss) history row and
    after_eval(training)."""
    eval_every = positive_int("eval_every", eval_every)
    world = distributed.world()
    world.check_batch("batch_size", training.batch_size)
    distributed.broadcast_parameters(model)
    progress = progress and world.is_root()
    with progress_bar(total=steps, initial=training.step, desc="training gpt", unit="step",
              disable=not progress) as bar:
        while training.step < steps:
            x, y = random_batch(train_ids, training.batch_size, model.config["block_size"], training.rng)
            rows = world.shard(len(x))
            (loss,) = world.mean([model.train_step(x[rows], y[rows])])
            check_loss(loss, f"step {training.step + 1}")
            optimizer.step(model)
            training.step += 1
            bar.update()
            if training.step % eval_every == 0 or training.step == steps:
                check_weights(model, f"step {training.step}", [optimizer])
                held_out = held_out_loss(model, held_out_ids, training.batch_size)
                check_loss(held_out, f"step {training.step} (held-out)")
                training.history.append([training.step, loss, held_out])
                bar.set_postfix(loss=f"{loss:.3f}", held_out=f"{held_out:.3f}")
                if after_eval is not None:
                    after_eval(training)
