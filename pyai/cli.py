"""The `pyai` command line (also `python -m pyai`).

    pyai train mlp [--epochs N] [--batch-size B] [--lr LR] [--hidden 64 ...] [--activation NAME]
                   [--seed S] [--backend NAME] [--out FILE]
    pyai bench [--quick]

An error prints one line, `pyai: error: ...`, and exits with status 2 for a bad command line and 1
for anything else (an unknown or unusable backend, a file that cannot be written, ...).
"""

import argparse
import os
import sys
import time

import numpy as np

from pyai import dispatch
from pyai.data import load_digits, one_hot
from pyai.losses import BinaryCrossentropy
from pyai.models import MLP, fit
from pyai.ops import ACTIVATIONS
from pyai.optim import Adam

DIGIT_CLASSES = 10


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
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def choose_backend(name):
    """Make `name` the current backend, or fail now with why it cannot run here."""
    reason = dispatch.unavailable_reason(name)
    if reason is not None:
        raise dispatch.BackendUnavailableError(f"backend {name!r} is not usable here: {reason}")
    dispatch.set_backend(name)


def train_mlp(args):
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
    accuracy = np.mean(np.argmax(model.predict(x_test), axis=1) == labels_test)
    print(f"test accuracy: {accuracy:.2%} on {len(labels_test)} digits "
          f"(final training loss {history[-1]:.4f}, {seconds:.1f} s on {dispatch.get_backend()})")
    if args.out:
        model.save(args.out)
        print(f"saved the model to {args.out}")
    return 0


def run_bench(args):
    from pyai import bench   # imported only when asked for
    bench.run(quick=args.quick)
    return 0


def build_parser():
    parser = Parser(prog="pyai", description="pyai: hand-written compiled kernels for deep learning")
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
    mlp.set_defaults(run=train_mlp)

    # ---- pyai bench: benchmarks, written in pyai/bench.py ----
    bench = commands.add_parser("bench", help="time the kernels beside their peers")
    bench.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    bench.set_defaults(run=run_bench)
    return parser


def one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def main(argv=None):
    """Run the command in `argv` (default: sys.argv[1:]); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UsageError as error:
        print(f"pyai: error: {one_line(error)}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as error:
        print(f"pyai: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyai: interrupted", file=sys.stderr)
        return 130
