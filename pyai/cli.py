"""The `pyai` command line (also `python -m pyai`).

    pyai train mlp [--epochs N] [--batch-size B] [--lr LR] [--hidden 64 ...] [--activation NAME]
                   [--seed S] [--backend NAME] [--out FILE]
    pyai train gan [--arch dense|conv] [--data PATH] [--epochs N] [--seed S] [--backend NAME] [--out DIR] [--resume]
    pyai sample gan --checkpoint FILE [--n 64] [--seed S] [--backend NAME] --out FILE.png
    pyai quality gan --checkpoint FILE [--data PATH] [--n 10000] [--seed S] [--backend NAME]
    pyai train gpt [--steps N] [--batch-size B] [--block-size T] [--layers L] [--heads H] [--channels C]
                   [--lr LR] [--eval-every N] [--seed S] [--backend NAME] [--out DIR] [--resume]
    pyai sample gpt --checkpoint FILE [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
    pyai bench [--quick] [--attention] [--out DIR] [--json FILE] [--plot DIR]
    pyai tune [--save]
    pyai warmup                 compile every numba-cpu kernel for this CPU, once, into Numba's cache
    pyai info [--json]          versions, CPU and ISA, threads, kernel cache, backends, GPU
    pyai --version

An error prints one line, `pyai: error: ...`, and exits with status 2 for a bad command line and 1
for anything else (an unknown or unusable backend, a file that cannot be written, sizes that would
not fit in memory, a run whose loss became NaN, ...).

Under mpiexec (`mpiexec -n 2 pyai train gpt ...`) the processes train one model data-parallel
(`pyai.distributed`): rank 0 alone prints and writes files, and a process that fails ends them all.
"""

import argparse
import os
import sys
import time

import numpy as np

from pyai import checkpoint, dispatch, distributed, info, text, warmup
from pyai.checks import FLOAT32_MAX, physical_memory
from pyai.data import load_digits, load_mnist, one_hot
from pyai.images import save_curves, save_grid
from pyai.losses import BinaryCrossentropy
from pyai.models import DCGAN, GAN, GPT, MLP
from pyai.ops import ACTIVATIONS
from pyai.optim import Adam
from pyai.training import Training, TrainingDiverged, fit, train_gan, train_gpt

DIGIT_CLASSES = 10
GAN_CHECKPOINT = "gan.npz"
GAN_SAMPLES = 64
GAN_ARCHITECTURES = {"dense": GAN, "conv": DCGAN}   # train gan --arch: the Dense GAN or the DCGAN
GPT_CHECKPOINT = "gpt.npz"
# train gpt's model and run settings: flags default to None so that --resume can tell which were given
GPT_DEFAULTS = {"batch_size": 32, "block_size": 64, "layers": 2, "heads": 4, "channels": 64, "lr": 3e-3,
                "seed": 0}


class UsageError(Exception):
    """A bad command line, reported in one line like every other error."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error raises UsageError instead of printing the usage and exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text):
    value = float(text)
    if not 0 < value <= FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"expected a positive number within float32's range, got {text!r}")
    return value


def at_least_two(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 (a Frechet distance needs the "
                                         f"spread of at least two samples), got {text!r}")
    return value


def check_sample_memory(gan, count):
    """One clear error, before anything is drawn, when `count` samples would not fit in memory."""
    sizes = gan.activation_sizes() if hasattr(gan, "activation_sizes") else gan.config["generator_sizes"]
    widest = max([gan.noise_dim, gan.pixels, *sizes])
    needed, memory = 4 * 3 * count * widest, physical_memory()
    if memory is not None and needed > memory:
        raise ValueError(f"--n {count}: the samples need about {needed / 2**30:,.0f} GiB while they are "
                         f"drawn; this machine has {memory / 2**30:,.0f} GiB")


def refuse_contradicting_flags(args, saved, path):
    """--resume goes on with the checkpoint's model and run: a flag given on the command line that
    says otherwise is an error, not silently ignored."""
    contradicting = [f"--{flag.replace('_', '-')} {given} (the checkpoint has {saved[flag]})"
                     for flag, given in vars(args).items()
                     if flag in saved and given is not None and given != saved[flag]]
    if contradicting:
        raise ValueError(f"--resume: {path} was trained with other settings: {', '.join(contradicting)}; "
                         f"drop those flags, or start a new run in another --out")


def diverged(error, path, what):
    """The divergence error, saying which checkpoint is kept."""
    kept = f"{path} keeps the last good {what}" if os.path.exists(path) else "no checkpoint was saved"
    return TrainingDiverged(f"{error}; {kept}")


def choose_backend(name):
    """Make `name` the current backend, or fail now with why it cannot run here."""
    reason = dispatch.unavailable_reason(name)
    if reason is not None:
        raise dispatch.BackendUnavailableError(f"backend {name!r} is not usable here: {reason}")
    dispatch.set_backend(name)


def run_train_mlp(args):
    """Train an MLP on scikit-learn's 8x8 digits and print its test accuracy."""
    choose_backend(args.backend or dispatch.get_backend())
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FileNotFoundError(f"--out {args.out}: its directory does not exist")
    x_train, labels_train, x_test, labels_test = load_digits(seed=args.seed)
    model = MLP([x_train.shape[1], *args.hidden, DIGIT_CLASSES], activation=args.activation,
                output_activation=None, alpha=args.alpha, seed=args.seed)
    # one sigmoid per class on the logits, trained with binary cross-entropy against one-hot targets
    start = time.perf_counter()
    history = fit(model, BinaryCrossentropy(from_logits=True), Adam(lr=args.lr), x_train,
                  one_hot(labels_train, DIGIT_CLASSES), epochs=args.epochs, batch_size=args.batch_size,
                  seed=args.seed)
    seconds = time.perf_counter() - start
    accuracy = np.mean(np.argmax(model.predict(x_test, args.batch_size), axis=1) == labels_test)
    print(f"test accuracy: {accuracy:.2%} on {len(labels_test)} digits "
          f"(final training loss {history[-1]:.4f}, {seconds:.1f} s on {dispatch.get_backend()})")
    if args.out and distributed.world().is_root():
        model.save(args.out)
        print(f"saved the model to {args.out}")
    return 0


def gan_data(path):
    """(images (n, pixels) in [-1, 1], labels, image shape): MNIST at `path`, or without one
    scikit-learn's 8x8 digits, every one of the 1797, which ship offline."""
    if path is None:
        x_train, labels_train, x_test, labels_test = load_digits()
        images, shape = np.concatenate([x_train, x_test]), (8, 8)
        labels = np.concatenate([labels_train, labels_test])
    else:
        images, labels = load_mnist(None if path == "mnist" else path)   # "mnist": Keras's file, cached
        images, shape = images.reshape(len(images), -1), images.shape[1:]
    return images * 2 - 1, labels, tuple(shape)


def gan_architecture(path):
    """The --arch of the GAN checkpoint at `path` ("dense" for anything not a DCGAN's, whose
    loading then says what is wrong with it)."""
    arrays = checkpoint.read_npz(path)
    kind = checkpoint.read_json(path, arrays, "format").get("kind") if "format" in arrays else None
    return "conv" if kind == DCGAN.__name__ else "dense"


def load_gan(path, training=None):
    """The GAN or DCGAN saved at `path`, whichever it holds."""
    return checkpoint.load(path, GAN_ARCHITECTURES[gan_architecture(path)], training=training)[0]


def check_image_shape(gan, shape, path, data):
    if gan.image_shape != shape:
        raise ValueError(f"checkpoint {path}: its GAN makes {gan.image_shape} images, the data "
                         f"({data or 'the 8x8 digits'}) has {shape} images")


def run_train_gan(args):
    """Train the GAN, saving a sample grid, the loss curve and a checkpoint after every epoch."""
    choose_backend(args.backend or dispatch.get_backend())
    images, _, shape = gan_data(args.data)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, GAN_CHECKPOINT)
    training = Training(seed=0 if args.seed is None else args.seed)
    if args.resume:
        gan = load_gan(path, training)
        check_image_shape(gan, shape, path, args.data)
        refuse_contradicting_flags(args, {"seed": training.seed, "arch": gan_architecture(path)}, path)
    elif os.path.exists(path):
        raise FileExistsError(f"{path} exists: pass --resume to go on from it, or choose another --out")
    else:
        gan = GAN_ARCHITECTURES[args.arch or "dense"](image_shape=shape, seed=0 if args.seed is None else args.seed)
    # the same noise every epoch, from its own generator, so the grids show the GAN learning
    sample_noise = np.random.default_rng([training.seed, 1]).standard_normal(
        (GAN_SAMPLES, gan.noise_dim), dtype=np.float32)

    def after_epoch(training):
        if not distributed.world().is_root():
            return
        save_grid(os.path.join(args.out, f"samples_epoch_{training.epoch:03d}.png"),
                  gan.generate(sample_noise), gan.image_shape)
        history = np.array(training.history)
        save_curves(os.path.join(args.out, "losses.png"),
                    {"discriminator": history[:, 0], "generator": history[:, 1]},
                    "GAN losses (binary cross-entropy)", "training step")
        checkpoint.save(path, gan, training=training)

    if training.epoch >= args.epochs:
        print(f"{path} has already trained {training.epoch} epochs; nothing to do")
        return 0
    start = time.perf_counter()
    try:
        train_gan(gan, images, training, epochs=args.epochs, after_epoch=after_epoch)
    except TrainingDiverged as error:
        raise diverged(error, path, "epoch's checkpoint") from error
    seconds = time.perf_counter() - start
    last_epoch = np.mean(training.history[-(len(images) // training.batch_size):], axis=0)
    print(f"trained {training.epoch} epochs in {seconds:.1f} s on {dispatch.get_backend()}; "
          f"the last epoch's means: "
          f"discriminator loss {last_epoch[0]:.4f}, generator loss {last_epoch[1]:.4f}, "
          f"discriminator accuracy {last_epoch[2]:.1%} on real, {last_epoch[3]:.1%} on fake")
    print(f"saved sample grids, losses.png and the checkpoint {GAN_CHECKPOINT} in {args.out}")
    return 0


def run_sample_gan(args):
    choose_backend(args.backend or dispatch.get_backend())
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FileNotFoundError(f"--out {args.out}: its directory does not exist")
    gan = load_gan(args.checkpoint)
    check_sample_memory(gan, args.n)
    save_grid(args.out, gan.sample(args.n, np.random.default_rng(args.seed)), gan.image_shape)
    print(f"saved {args.n} samples to {args.out}")
    return 0


def run_quality_gan(args):
    from pyai import quality   # trains a classifier; imported only when asked for

    choose_backend(args.backend or dispatch.get_backend())
    gan = load_gan(args.checkpoint)
    images, labels, shape = gan_data(args.data)
    check_image_shape(gan, shape, args.checkpoint, args.data)
    check_sample_memory(gan, args.n)
    classifier, accuracy = quality.train_classifier(images, labels, seed=args.seed)
    report = quality.quality_report(classifier, images, gan.sample(args.n, np.random.default_rng(args.seed)))
    print(f"classifier: pyai MLP, {accuracy:.1%} accurate on held-out real images")
    print(f"{args.n} samples: {report['confident']:.1%} classified with confidence > {quality.CONFIDENCE}, "
          f"{report['classes']} of {DIGIT_CLASSES} digits among them, "
          f"Frechet distance to the real images' features {report['frechet_distance']:.2f}")
    return 0


def run_train_gpt(args):
    """Train a character-level GPT on Python's documentation text, checkpointing at every evaluation."""
    choose_backend(args.backend or dispatch.get_backend())
    corpus = text.load_corpus()
    vocabulary = text.Vocabulary(corpus)
    train_ids, held_out_ids = text.split(vocabulary.encode(corpus))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, GPT_CHECKPOINT)
    if args.resume:
        model, optimizer, training = load_gpt_training(path, vocabulary)
        refuse_contradicting_flags(args, {**model.config, "lr": optimizer.lr, "seed": training.seed,
                                          "batch_size": training.batch_size}, path)
    elif os.path.exists(path):
        raise FileExistsError(f"{path} exists: pass --resume to go on from it, or choose another --out")
    else:
        settings = {flag: GPT_DEFAULTS[flag] if value is None else value
                    for flag, value in vars(args).items() if flag in GPT_DEFAULTS}
        model = GPT(len(vocabulary), settings["block_size"], layers=settings["layers"],
                    heads=settings["heads"], channels=settings["channels"], seed=settings["seed"])
        optimizer = Adam(lr=settings["lr"])
        training = Training(seed=settings["seed"], batch_size=settings["batch_size"])

    def after_eval(training):
        if not distributed.world().is_root():
            return
        metadata = {"vocabulary": vocabulary.characters, "lr": optimizer.lr}
        checkpoint.save(path, model, optimizer, training, metadata)

    if training.step >= args.steps:
        print(f"{path} has already trained {training.step} steps; nothing to do")
        return 0
    start = time.perf_counter()
    try:
        train_gpt(model, optimizer, train_ids, held_out_ids, training, steps=args.steps,
                  eval_every=args.eval_every, after_eval=after_eval)
    except TrainingDiverged as error:
        raise diverged(error, path, "evaluation's checkpoint") from error
    seconds = time.perf_counter() - start
    step, loss, held_out = training.history[-1]
    print(f"trained {step} steps in {seconds:.1f} s on {dispatch.get_backend()} "
          f"({len(train_ids):,} training and {len(held_out_ids):,} held-out characters, "
          f"{len(vocabulary)} distinct): training loss {loss:.4f}, held-out loss {held_out:.4f}")
    print(f"saved the checkpoint {path}")
    return 0


def load_gpt_training(path, vocabulary):
    """(model, optimizer, training) from a checkpoint of 'pyai train gpt', checking its vocabulary."""
    optimizer, training = Adam(), Training()
    model, metadata = checkpoint.load(path, GPT, optimizer, training)
    try:
        optimizer.lr = float(metadata["lr"])
        characters = metadata["vocabulary"]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"checkpoint {path}: not a checkpoint of 'pyai train gpt' "
                         f"({type(error).__name__}: {error})") from error
    if characters != vocabulary.characters:
        raise ValueError(f"checkpoint {path}: its vocabulary differs from this corpus's")
    return model, optimizer, training


def run_sample_gpt(args):
    choose_backend(args.backend or dispatch.get_backend())
    model, metadata = GPT.load(args.checkpoint)
    if not isinstance(metadata.get("vocabulary"), str):
        raise ValueError(f"checkpoint {args.checkpoint}: has no vocabulary; "
                         f"is it a checkpoint of 'pyai train gpt'?")
    vocabulary = text.Vocabulary(metadata["vocabulary"])
    prompt = vocabulary.encode(args.prompt)
    if len(prompt) == 0:
        raise ValueError("--prompt: must hold at least one character")
    ids = model.generate(prompt, args.tokens, temperature=args.temperature, top_k=args.top_k,
                         rng=np.random.default_rng(args.seed))
    print(vocabulary.decode(ids))
    return 0


def run_tune(args):
    from pyai.bench import tune   # imported only when asked for
    tune.run(save=args.save)
    return 0


def run_bench(args):
    from pyai import bench   # imported only when asked for
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise FileNotFoundError(f"--json {args.json}: its directory does not exist")
    records = []
    if args.attention:
        bench.attention_table(sizes=(256, 512) if args.quick else (256, 512, 1024, 2048, 4096),
                              out=args.out, quick=args.quick, records=records)
    else:
        bench.run(quick=args.quick, out=args.out, records=records)
    if args.json:
        bench.write_json(args.json, "attention" if args.attention else "cases", records)
        print(f"wrote {args.json}")
    if args.plot:
        for path in bench.plot(args.plot, "attention" if args.attention else "cases", records):
            print(f"wrote {path}")
    return 0


def run_warmup(args):
    processes = min(warmup.free_cores(), len(warmup.CHAINS))
    print(f"compiling every numba-cpu kernel for this CPU into {warmup.cache_folder()}, in {processes} "
          f"process{'es' if processes > 1 else ''} ...", flush=True)
    seconds = warmup.warm_everything(processes)
    print(f"compiled in {seconds:.1f} s; commands now start without compiling")
    return 0


def run_info(args):
    import json
    collected = info.collect()
    print(json.dumps(collected, indent=2) if args.json else "\n".join(info.describe(collected)))
    return 0


def add_checkpoint_arguments(parser, samples, count_type=positive_int):
    parser.add_argument("--checkpoint", metavar="FILE", required=True, help="a checkpoint of 'pyai train gan'")
    parser.add_argument("--n", type=count_type, default=samples,
                        help="how many samples (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="the samples' noise (default: %(default)s)")
    parser.add_argument("--backend", help=f"one of {', '.join(dispatch.BACKENDS)} (default: the current one)")


def build_parser():
    parser = Parser(prog="pyai", description="pyai: hand-written compiled kernels for deep learning")
    parser.add_argument("--version", action="version", version=f"pyai {info.version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model")
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    mlp = models.add_parser("mlp", help="an MLP on scikit-learn's 8x8 digits; prints test accuracy")
    mlp.add_argument("--epochs", type=positive_int, default=30,
                     help="passes over the training set (default: %(default)s)")
    mlp.add_argument("--batch-size", type=positive_int, default=32,
                     help="images per Adam step (default: %(default)s)")
    mlp.add_argument("--lr", type=positive_float, default=0.005,
                     help="Adam's learning rate (default: %(default)s)")
    mlp.add_argument("--hidden", type=positive_int, nargs="+", default=[64], metavar="SIZE",
                     help="hidden layer sizes (default: %(default)s)")
    mlp.add_argument("--activation", choices=[name for name in ACTIVATIONS if name], default="leaky_relu",
                     help="hidden layers' activation (default: %(default)s)")
    mlp.add_argument("--alpha", type=float, default=0.2,
                     help="leaky_relu's negative slope (default: %(default)s)")
    mlp.add_argument("--seed", type=non_negative_int, default=0,
                     help="weights, data split and shuffling (default: %(default)s)")
    mlp.add_argument("--backend", help=f"one of {', '.join(dispatch.BACKENDS)} (default: the current one)")
    mlp.add_argument("--out", metavar="FILE", help="save the trained model here (.npz)")
    mlp.set_defaults(run=run_train_mlp)

    gan = models.add_parser("gan", help="a GAN drawing digits; sample grids, loss curve, checkpoint in --out")
    gan.add_argument("--arch", choices=sorted(GAN_ARCHITECTURES), help="dense: the GAN of Dense layers; "
                     "conv: the DCGAN, Conv2DTranspose up to the image, Conv2D down (default: dense, "
                     "or the checkpoint's with --resume)")
    gan.add_argument("--data", metavar="PATH", help="MNIST: a folder of IDX files or mnist.npz, or "
                     "the word mnist to download Keras's mnist.npz once into ~/.cache/pyai "
                     "(default: scikit-learn's 8x8 digits, which ship offline)")
    gan.add_argument("--epochs", type=positive_int, default=200,
                     help="train until this many epochs are done, counting resumed ones (default: %(default)s)")
    gan.add_argument("--seed", type=non_negative_int,
                     help="weights, shuffling and noise of a new run (default: 0)")
    gan.add_argument("--backend", help=f"one of {', '.join(dispatch.BACKENDS)} (default: the current one)")
    gan.add_argument("--out", metavar="DIR", default="gan", help="where results go (default: %(default)s)")
    gan.add_argument("--resume", action="store_true", help=f"go on from DIR/{GAN_CHECKPOINT}")
    gan.set_defaults(run=run_train_gan)

    gpt_parser = models.add_parser("gpt", help="a character-level GPT on Python's documentation text "
                                   "(pydoc_data, offline); held-out loss, checkpoint in --out")
    gpt_parser.add_argument("--steps", type=positive_int, default=2000, help="train until this many Adam steps "
                            "are done, counting resumed ones (default: %(default)s)")
    gpt_parser.add_argument("--batch-size", type=positive_int, default=None,
                            help=f"windows per step (default: {GPT_DEFAULTS['batch_size']})")
    gpt_parser.add_argument("--block-size", type=positive_int, default=None,
                            help=f"characters per window: the context length (default: {GPT_DEFAULTS['block_size']})")
    gpt_parser.add_argument("--layers", type=positive_int, default=None,
                            help=f"transformer blocks (default: {GPT_DEFAULTS['layers']})")
    gpt_parser.add_argument("--heads", type=positive_int, default=None,
                            help=f"attention heads (default: {GPT_DEFAULTS['heads']})")
    gpt_parser.add_argument("--channels", type=positive_int, default=None,
                            help=f"embedding size (default: {GPT_DEFAULTS['channels']})")
    gpt_parser.add_argument("--lr", type=positive_float, default=None,
                            help=f"Adam's learning rate (default: {GPT_DEFAULTS['lr']})")
    gpt_parser.add_argument("--eval-every", type=positive_int, default=100,
                            help="steps between held-out evaluations and checkpoints (default: %(default)s)")
    gpt_parser.add_argument("--seed", type=non_negative_int, default=None,
                            help=f"weights and batches of a new run (default: {GPT_DEFAULTS['seed']})")
    gpt_parser.add_argument("--backend",
                            help=f"one of {', '.join(dispatch.BACKENDS)} (default: the current one)")
    gpt_parser.add_argument("--out", metavar="DIR", default="gpt",
                            help="where the checkpoint goes (default: %(default)s)")
    gpt_parser.add_argument("--resume", action="store_true", help=f"go on from DIR/{GPT_CHECKPOINT}")
    gpt_parser.set_defaults(run=run_train_gpt)

    sample = commands.add_parser("sample", help="draw samples from a trained model")
    sample_models = sample.add_subparsers(dest="model", required=True, metavar="MODEL")
    sample_gan_parser = sample_models.add_parser("gan", help="a grid of a GAN's samples as PNG")
    add_checkpoint_arguments(sample_gan_parser, samples=GAN_SAMPLES)
    sample_gan_parser.add_argument("--out", metavar="FILE", required=True, help="the PNG to write")
    sample_gan_parser.set_defaults(run=run_sample_gan)
    sampler = sample_models.add_parser("gpt", help="text from a GPT of 'pyai train gpt', after a prompt")
    sampler.add_argument("--checkpoint", metavar="FILE", required=True, help="a checkpoint of 'pyai train gpt'")
    sampler.add_argument("--prompt", default="\n", help="the text to go on from (default: a newline)")
    sampler.add_argument("--tokens", type=positive_int, default=300,
                         help="characters to generate (default: %(default)s)")
    sampler.add_argument("--temperature", type=positive_float, default=0.8,
                         help="divides the logits: lower is more conservative (default: %(default)s)")
    sampler.add_argument("--top-k", type=positive_int, help="sample among the K likeliest characters only")
    sampler.add_argument("--seed", type=non_negative_int, default=0, help="the sampling (default: %(default)s)")
    sampler.add_argument("--backend", help=f"one of {', '.join(dispatch.BACKENDS)} (default: the current one)")
    sampler.set_defaults(run=run_sample_gpt)

    quality = commands.add_parser("quality", help="measure a trained model's samples")
    quality_models = quality.add_subparsers(dest="model", required=True, metavar="MODEL")
    quality_gan_parser = quality_models.add_parser(
        "gan", help="confident share, digits covered and Frechet distance, by a classifier trained on --data")
    add_checkpoint_arguments(quality_gan_parser, samples=10000, count_type=at_least_two)
    quality_gan_parser.add_argument("--data", metavar="PATH", help="the real images, as for 'train gan' "
                                    "(default: scikit-learn's 8x8 digits)")
    quality_gan_parser.set_defaults(run=run_quality_gan)

    tune = commands.add_parser("tune", help="measure the matmul's cache blocking on this CPU")
    tune.add_argument("--save", action="store_true", help="keep the fastest blocking for this CPU model")
    tune.set_defaults(run=run_tune)

    # ---- pyai bench: benchmarks, written in pyai/bench/ ----
    bench = commands.add_parser("bench", help="time the kernels beside their peers")
    bench.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    bench.add_argument("--attention", action="store_true",
                       help="the attention sweep instead: T = 256..4096, time, GFLOP/s, peak memory")
    bench.add_argument("--out", metavar="DIR", help="also write the table to DIR/cpu-<date>.md "
                       "(attention-cpu-<date>.md with --attention), e.g. benchmarks/results")
    bench.add_argument("--json", metavar="FILE", help="also write the results and the machine (pyai info) as JSON")
    bench.add_argument("--plot", metavar="DIR", help="also draw the results as PNG charts in DIR")
    bench.set_defaults(run=run_bench)

    warm = commands.add_parser("warmup", help="compile every numba-cpu kernel for this CPU ahead of use")
    warm.set_defaults(run=run_warmup)
    info_parser = commands.add_parser("info", help="versions, CPU, threads, kernel cache, backends, GPU")
    info_parser.add_argument("--json", action="store_true", help="as JSON")
    info_parser.set_defaults(run=run_info)
    return parser


def one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def main(argv=None):
    """Run the command in `argv` (default: sys.argv[1:]); returns the exit status. Under mpiexec
    only rank 0 prints results, and a failed command ends every process (MPI_Abort) with its
    status, so no process waits for it."""
    try:
        world = distributed.world()
    except RuntimeError as error:   # mpiexec without mpi4py
        print(f"pyai: error: {one_line(error)}", file=sys.stderr)
        return 1
    if not world.is_root():
        sys.stdout = open(os.devnull, "w")
    status = run_command(argv)
    if status != 0:
        world.abort(status)
    return status


def run_command(argv):
    """Run the command in `argv`; returns the exit status, printing any error in one line."""
    try:
        args = build_parser().parse_args(argv)
        warmup.expect(warmup.ops_of_command(args))
        return args.run(args)
    except BrokenPipeError:   # the reader left (`pyai info | head`): not an error of pyai's
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 0
    except UsageError as error:
        print(f"pyai: error: {one_line(error)}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as error:
        print(f"pyai: error: {one_line(error)}", file=sys.stderr)
        return 1
    except (MemoryError, OverflowError) as error:
        print(f"pyai: error: out of memory or range ({type(error).__name__}: {one_line(error)}); "
              f"try smaller sizes", file=sys.stderr)
        return 1
    except Exception as error:   # the command line promises one line, whatever went wrong
        print(f"pyai: error: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyai: interrupted", file=sys.stderr)
        return 130
