"""Sample quality of pyai's GAN beside the same GAN trained in Keras, with the same budget and seed.

    python benchmarks/gan_quality.py [--data ../shared/data/mnist] [--epochs 20] [--seed 0] [--out DIR]
    python benchmarks/gan_quality.py --arch conv --epochs 3     # the DCGAN beside its Keras twin

Both GANs start from the same weights (`to_keras`) and are driven by the same `train` loop, which
draws every shuffle and noise batch from one generator seeded alike, so they see the same batches
and noise for the same number of steps. A pyai MLP classifier trained on the same real images
scores 10,000 samples of each from the same noise (`pyai.quality`): the share classified with
confidence > 0.9, how many digits appear among those, and the Fréchet distance between the
classifier's features of real and generated images. The real images themselves are the reference
row (half of them against the other half). With --out, 64 samples of each GAN go to
DIR/pyai_samples.png and DIR/keras_samples.png. Needs the MNIST files and tensorflow.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from pyai import quality
from pyai.data import load_mnist
from pyai.images import save_grid
from pyai.models import DCGAN, GAN
from pyai.reference.keras import keras_train_step, to_keras
from pyai.training import GAN_HISTORY_COLUMNS as HISTORY_COLUMNS, Training, train_gan as train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/mnist"
SAMPLES = 10000


class KerasGAN:
    """A GAN's Keras twin with GAN.train_step's signature, so that `train` drives both alike."""

    def __init__(self, gan):
        self.noise_dim, self.pixels = gan.noise_dim, gan.pixels
        self.generator, self.discriminator = to_keras(gan)
        self.step = keras_train_step(self.generator, self.discriminator, gan.config["learning_rate"],
                                     gan.config["beta_1"])

    def train_step(self, real, noise, generator_noise):
        return dict(zip(HISTORY_COLUMNS, (float(value) for value in self.step(real, noise, generator_noise))))

    def generate(self, noise):
        return self.generator(noise).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="MNIST files (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="the budget of each GAN (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="weights, batches and noise (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="a folder for a PNG of 64 samples of each GAN")
    parser.add_argument("--arch", choices=["dense", "conv"], default="dense",
                        help="the Dense GAN or the DCGAN (default: %(default)s)")
    args = parser.parse_args()

    images, labels = load_mnist(args.data)
    images = images.reshape(len(images), -1) * 2 - 1
    classifier, accuracy = quality.train_classifier(images, labels, seed=args.seed)
    noise = np.random.default_rng([args.seed, 2]).standard_normal((SAMPLES, 100), dtype=np.float32)
    half = len(images) // 2
    rows = [("real images (half vs half)", None, None, quality.quality_report(classifier, images[:half],
                                                                              images[half:]))]
    model = DCGAN if args.arch == "conv" else GAN
    for name, gan in (("pyai", model(seed=args.seed)), ("keras", KerasGAN(model(seed=args.seed)))):
        training = Training(seed=args.seed)
        start = time.perf_counter()
        train(gan, images, training, epochs=args.epochs)
        seconds = time.perf_counter() - start
        last_epoch = np.mean(training.history[-(len(images) // training.batch_size):], axis=0)
        samples = gan.generate(noise)
        rows.append((f"{name} GAN", seconds, last_epoch, quality.quality_report(classifier, images, samples)))
        if args.out:
            save_grid(args.out / f"{name}_samples.png", samples[:64], (28, 28))

    steps = args.epochs * (len(images) // 64)
    print(f"{len(images)} MNIST images from {args.data}; budget {args.epochs} epochs = {steps} steps of "
          f"batch 64, seed {args.seed}; classifier (pyai MLP) {accuracy:.1%} accurate on held-out images")
    print(f"{'':<28} {'train s':>8} {'D loss':>7} {'G loss':>7} {'confident':>10} {'digits':>7} {'Frechet':>8}")
    for name, seconds, last_epoch, report in rows:
        timing = f"{seconds:8.1f} {last_epoch[0]:7.3f} {last_epoch[1]:7.3f}" if seconds else " " * 24
        print(f"{name:<28} {timing} {report['confident']:10.1%} {report['classes']:>7} "
              f"{report['frechet_distance']:8.2f}")


if __name__ == "__main__":
    main()
