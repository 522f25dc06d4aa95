"""pyai's GAN and GPT in Keras: the same models with the same weights, for tests and benchmarks.

    generator, discriminator = to_keras(gan)            # keras.Sequential models, gan's weights
    step = keras_train_step(generator, discriminator)   # GAN.train_step as a tf.function
    generator, discriminator = to_keras(dcgan)          # a DCGAN's twins: Conv2D, Conv2DTranspose, ...
    gan = from_keras(generator, discriminator)           # and back
    twin, variables = to_keras(gpt)                      # a keras.Model and {pyai name: its variable}

Each function imports keras (and tensorflow) when called, so importing this module needs neither.
"""

import math

import numpy as np

from pyai.models import DCGAN, GAN, GPT
from pyai.nn import Conv2D, Conv2DTranspose, Dense, Flatten, Reshape


def to_keras(model):
    """The Keras twin of a GAN, (generator, discriminator), or of a GPT, (keras_model, variables),
    with the model's weights copied in."""
    return TWIN_BUILDERS[type(model)](model)


# ---- The GAN: two keras.Sequential models and a GradientTape training step ----

def keras_layers_of(network, output_activation, keras):
    """Keras layers computing what a pyai Dense stack computes: each Dense, then its activation."""
    layers = [keras.Input((network.layers[0].in_features,))]
    for dense in network.layers[:-1]:
        layers += [keras.layers.Dense(dense.out_features), keras.layers.LeakyReLU(negative_slope=dense.alpha)]
    layers += [keras.layers.Dense(network.layers[-1].out_features), keras.layers.Activation(output_activation)]
    return layers


def gan_to_keras(gan):
    """(generator, discriminator): keras.Sequential models with `gan`'s weights, computing the same.

    The discriminator outputs probabilities through a final Activation("sigmoid") layer, so
    `keras.Sequential(discriminator.layers[:-1])` computes its logits. Needs tensorflow.
    """
    import keras

    models = []
    for network, output_activation in ((gan.generator, "tanh"), (gan.discriminator, "sigmoid")):
        model = keras.Sequential(keras_layers_of(network, output_activation, keras))
        dense_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        for layer, dense in zip(dense_layers, network.layers, strict=True):
            layer.set_weights([dense.weight, dense.bias])
        models.append(model)
    return tuple(models)


def keras_description(model, keras):
    """A Keras model's layers as tuples (kind, size or slope or activation), to compare structures."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            layers.append(("Dense", layer.units, layer.activation.__name__))
        elif isinstance(layer, keras.layers.LeakyReLU):
            layers.append(("LeakyReLU", round(float(layer.negative_slope), 6)))
        elif isinstance(layer, keras.layers.Activation):
            layers.append(("Activation", layer.activation.__name__))
        else:
            layers.append((type(layer).__name__,))
    return layers


def expected_description(network, output_activation):
    """The `keras_description` of what `keras_layers_of(network, output_activation)` builds."""
    layers = []
    for dense in network.layers[:-1]:
        layers += [("Dense", dense.out_features, "linear"), ("LeakyReLU", round(dense.alpha, 6))]
    return layers + [("Dense", network.layers[-1].out_features, "linear"), ("Activation", output_activation)]


def from_keras(generator, discriminator, image_shape=None):
    """A GAN with the weights of Keras models built like `gan_to_keras`'s; ValueError otherwise.

    image_shape defaults to a square of the generator's outputs. Needs tensorflow.
    """
    import keras

    kernels = [[layer.get_weights() for layer in model.layers if isinstance(layer, keras.layers.Dense)]
               for model in (generator, discriminator)]
    if not kernels[0] or not kernels[1]:
        raise ValueError("from_keras: both models need Dense layers")
    generator_sizes = [kernel.shape[1] for kernel, _ in kernels[0]]
    pixels = generator_sizes.pop()
    if image_shape is None:
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(f"image_shape: the generator makes {pixels} pixels, not a square; pass the shape")
        image_shape = (side, side)
    slopes = [layer.negative_slope for layer in generator.layers if isinstance(layer, keras.layers.LeakyReLU)]
    gan = GAN(image_shape=image_shape, noise_dim=kernels[0][0][0].shape[0], generator_sizes=generator_sizes,
              discriminator_sizes=[kernel.shape[1] for kernel, _ in kernels[1][:-1]],
              alpha=float(slopes[0]) if slopes else 0.2)
    for name, model, network, model_kernels, output_activation in (
            ("generator", generator, gan.generator, kernels[0], "tanh"),
            ("discriminator", discriminator, gan.discriminator, kernels[1], "sigmoid")):
        found, expected = keras_description(model, keras), expected_description(network, output_activation)
        if found != expected:
            raise ValueError(f"{name}: its layers {found} are not a pyai GAN's {expected}")
        for dense, (kernel, bias) in zip(network.layers, model_kernels, strict=True):
            if kernel.shape != dense.weight.shape:
                raise ValueError(f"{name}: a Dense kernel is {kernel.shape}, expected {dense.weight.shape}")
            dense.weight[...] = kernel
            dense.bias[...] = bias
    return gan


def keras_train_step(generator, discriminator, learning_rate=2e-4, beta_1=0.5):
    """`GAN.train_step` in Keras, for models from `gan_to_keras`: a tf.function
    step(real, noise, generator_noise) -> (discriminator_loss, generator_loss, real_accuracy,
    fake_accuracy) as tensors, with its own two Keras Adams (tf.GradientTape). Needs tensorflow."""
    import keras
    import tensorflow as tf

    logits_of = keras.Sequential(discriminator.layers[:-1])   # shares the layers, so the weights
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    discriminator_adam = keras.optimizers.Adam(learning_rate, beta_1=beta_1)
    generator_adam = keras.optimizers.Adam(learning_rate, beta_1=beta_1)

    @tf.function
    def step(real, noise, generator_noise):
        n = tf.shape(real)[0]
        images = tf.concat([real, generator(noise)], axis=0)
        targets = tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], axis=0)
        with tf.GradientTape() as tape:
            logits = logits_of(images)
            discriminator_loss = loss(targets, logits)
        weights = logits_of.trainable_weights
        discriminator_adam.apply_gradients(zip(tape.gradient(discriminator_loss, weights), weights))

        with tf.GradientTape() as tape:
            fake_logits = logits_of(generator(generator_noise))
            generator_loss = loss(tf.ones_like(fake_logits), fake_logits)
        weights = generator.trainable_weights
        generator_adam.apply_gradients(zip(tape.gradient(generator_loss, weights), weights))
        real_accuracy = tf.reduce_mean(tf.cast(logits[:n] > 0, tf.float32))
        fake_accuracy = tf.reduce_mean(tf.cast(logits[n:] <= 0, tf.float32))
        return discriminator_loss, generator_loss, real_accuracy, fake_accuracy

    return step


# ---- The GPT: a keras.Model of Embedding, MultiHeadAttention, LayerNormalization and Dense layers ----

def gpt_to_keras(model):
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
        raise ValueError(f"gpt_to_keras: the Keras twin and {model!r} differ in {sorted(missing)}")
    return variables


# ---- The DCGAN: keras.Sequential models of Dense, Reshape, Conv2DTranspose, Conv2D and Flatten ----

def keras_layer_of(layer, keras):
    """The Keras layers computing what one pyai layer computes: the layer, then its activation."""
    if isinstance(layer, Reshape) and not isinstance(layer, Flatten):
        return [keras.layers.Reshape(layer.shape)]
    if isinstance(layer, Flatten):
        return [keras.layers.Flatten()]
    if isinstance(layer, Dense):
        main = keras.layers.Dense(layer.out_features)
    else:
        kind = keras.layers.Conv2DTranspose if isinstance(layer, Conv2DTranspose) else keras.layers.Conv2D
        main = kind(layer.out_channels, layer.kernel_size, strides=layer.stride, padding=layer.padding)
    if layer.activation == "leaky_relu":
        return [main, keras.layers.LeakyReLU(negative_slope=layer.alpha)]
    return [main] if layer.activation is None else [main, keras.layers.Activation(layer.activation)]


def dcgan_to_keras(gan):
    """(generator, discriminator): keras.Sequential models with `gan`'s weights, computing the same;
    the discriminator ends in Activation("sigmoid") after its logit, as `gan_to_keras`'s does, so
    `keras_train_step` takes them. Needs tensorflow."""
    import keras

    models = []
    for network, output in ((gan.generator, []), (gan.discriminator, [keras.layers.Activation("sigmoid")])):
        layers = [keras.Input((gan.noise_dim if network is gan.generator else gan.pixels,))]
        for layer in network.layers:
            layers += keras_layer_of(layer, keras)
        model = keras.Sequential(layers + output)
        with_weights = [layer for layer in model.layers if layer.weights]
        for keras_layer, (weight, bias) in zip(with_weights, [(layer.weight, layer.bias) for layer in network.layers
                                                              if layer.parameters()], strict=True):
            keras_layer.set_weights([weight, bias])
        models.append(model)
    return tuple(models)


TWIN_BUILDERS = {GAN: gan_to_keras, GPT: gpt_to_keras, DCGAN: dcgan_to_keras}
