"""The cases `pyai bench` times: each does the same work with every peer on the same inputs.

A case is a name, the work one call does (FLOPs or bytes), its unit, and one zero-argument runner
per peer. `peers` is {name: module or None} from `pyai.bench.peers.installed()`; a peer that is
None (not installed) gets no runner. Runners named "... (floor)" are not peers but a limit: work
no implementation of the case can skip.
"""

import dataclasses
import math

import numpy as np

import pyai
from pyai.bench.peaks import parallel_copy


@dataclasses.dataclass
class Case:
    name: str
    work: float          # FLOPs or bytes per call
    unit: str            # "GFLOP/s" or "GB/s"
    runners: dict        # peer name -> zero-argument callable doing one call
    target: str = ""     # the goal this case is checked against, in words
    inputs: tuple = ()   # the arrays the runners share, for a twin defined elsewhere to use


def peer(peers, name):
    return (peers or {}).get(name)


def matmul_case(size, rng, peers):
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    runners = {"pyai": lambda: pyai.ops.matmul(a, b), "numpy": lambda: a @ b}
    if tf := peer(peers, "tensorflow"):
        ta, tb = tf.constant(a), tf.constant(b)
        tf_matmul = tf.function(tf.linalg.matmul)
        runners["tensorflow"] = lambda: tf_matmul(ta, tb).numpy()
    if torch := peer(peers, "torch"):
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        runners["torch"] = lambda: ta @ tb
    target = "pyai >= 0.9x the faster of numpy and torch" if size >= 256 else ""
    return Case(f"matmul {size}^3", 2.0 * size**3, "GFLOP/s", runners, target)


def linear_case(batch, features_in, features_out, rng, peers, alpha=0.2):
    x = rng.standard_normal((batch, features_in)).astype(np.float32)
    w = rng.standard_normal((features_in, features_out)).astype(np.float32)
    b = rng.standard_normal(features_out).astype(np.float32)

    def numpy_linear():
        y = x @ w
        y += b
        return np.maximum(y, alpha * y, out=y)   # leaky_relu for 0 <= alpha < 1

    runners = {"pyai": lambda: pyai.ops.linear(x, w, b, activation="leaky_relu", alpha=alpha),
               "numpy": numpy_linear}
    if tf := peer(peers, "tensorflow"):
        tx, tw, tb = tf.constant(x), tf.constant(w), tf.constant(b)
        tf_linear = tf.function(lambda x, w, b: tf.nn.leaky_relu(tf.matmul(x, w) + b, alpha=alpha))
        runners["tensorflow"] = lambda: tf_linear(tx, tw, tb).numpy()
    if torch := peer(peers, "torch"):
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        leaky_relu = torch.nn.functional.leaky_relu
        runners["torch"] = lambda: leaky_relu(torch.addmm(tb, tx, tw), alpha, inplace=True)
    name = f"linear+bias+leaky_relu {batch}x{features_in}->{features_out}"
    return Case(name, 2.0 * batch * features_in * features_out, "GFLOP/s", runners,
                "pyai >= 0.9x the faster of numpy and torch")


def leaky_relu_case(size, rng, peers, alpha=0.2):
    """Forward then gradient: reads x, writes y; reads dy and x, writes dx = 20 bytes a float."""
    x = rng.standard_normal(size).astype(np.float32)
    dy = rng.standard_normal(size).astype(np.float32)

    def pyai_both():
        return pyai.ops.leaky_relu(x, alpha), pyai.ops.leaky_relu_grad(dy, x, alpha)

    def numpy_both():
        return np.maximum(x, alpha * x), np.where(x > 0, dy, alpha * dy)

    half = np.empty(size // 2, np.float32)

    def copy_floor():
        # the same 20 bytes a float as plain copies on every core: two copies into fresh arrays
        # (the ops return two fresh arrays) and half a copy more into a reused one
        parallel_copy(np.empty(size, np.float32), x)
        parallel_copy(np.empty(size, np.float32), dy)
        parallel_copy(half, x[: size // 2])

    runners = {"pyai": pyai_both, "numpy": numpy_both, "memory copy (floor)": copy_floor}
    if tf := peer(peers, "tensorflow"):
        tx, tdy = tf.constant(x), tf.constant(dy)

        @tf.function
        def tf_both(x, dy):
            return tf.nn.leaky_relu(x, alpha=alpha), tf.where(x > 0, dy, alpha * dy)

        runners["tensorflow"] = lambda: [t.numpy() for t in tf_both(tx, tdy)]
    if torch := peer(peers, "torch"):
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        leaky_relu = torch.nn.functional.leaky_relu
        runners["torch"] = lambda: (leaky_relu(tx, alpha), torch.where(tx > 0, tdy, alpha * tdy))
    return Case(f"leaky_relu fwd+grad {size / 2**20:.0f}M floats", 20.0 * size, "GB/s", runners,
                "pyai >= 0.85x the copy floor's rate")


def dense_flops(sizes, rows):
    """2 * rows * in * out summed over the Dense layers of sizes [inputs, ..., outputs]."""
    return 2.0 * rows * sum(inputs * outputs for inputs, outputs in zip(sizes, sizes[1:]))


def gan_step_products(generator, discriminator, n):
    """(shape of A, shape of B) of every product in one GAN step, as the case below counts them.
    Done by numpy on warm operands with nothing else around them, they are a floor: the time a
    step could take if its matmuls ran at OpenBLAS speed and the rest cost nothing."""
    def forward(sizes, rows):
        return [((rows, inputs), (inputs, outputs)) for inputs, outputs in zip(sizes, sizes[1:])]

    def weight_gradients(sizes, rows):
        return [((inputs, rows), (rows, outputs)) for inputs, outputs in zip(sizes, sizes[1:])]

    def input_gradients(sizes, rows, first=True):
        pairs = list(zip(sizes, sizes[1:]))[0 if first else 1:]
        return [((rows, outputs), (outputs, inputs)) for inputs, outputs in pairs]

    return (forward(generator, n) + forward(discriminator, 2 * n)
            + weight_gradients(discriminator, 2 * n) + input_gradients(discriminator, 2 * n, False)
            + forward(generator, n) + forward(discriminator, n) + input_gradients(discriminator, n)
            + weight_gradients(generator, n) + input_gradients(generator, n, False))


def gan_step_case(rng, peers, batch=64):
    """One training step of pyai.models.GAN at MNIST sizes (784 pixels), beside the same step in
    Keras (`keras_train_step`: tf.function, tf.GradientTape, Keras Adam), from the same weights.
    (The PyTorch twin of the step is in benchmarks/test_gan.py.)

    work = the matmul FLOPs the step needs, pass by pass (n = batch; a pass over a network of
    layer sizes s costs 2 * rows * sum(s_i * s_i+1); bias, activations, losses and Adam are
    O(parameters) and left out):
      discriminator update: G forward (n rows), D forward (2n: real and fake), D weight gradients
        (2n), D input gradients below its first layer (2n; nothing needs the image gradient);
      generator update: G forward (n, fresh noise), D forward (n), D input gradients (n, all
        layers; D's weight gradients are not needed), G weight gradients (n), G input gradients
        below its first layer (n).
    For batch 64: 1.20 GFLOP, the same work in pyai and Keras.
    """
    from pyai.models import GAN
    from pyai.reference.keras import keras_train_step, to_keras

    gan = GAN(seed=0)
    generator = [gan.noise_dim, *gan.config["generator_sizes"], gan.pixels]
    discriminator = [gan.pixels, *gan.config["discriminator_sizes"], 1]
    g, d = dense_flops(generator, batch), dense_flops(discriminator, batch)   # one pass of n rows
    g_first, d_first = dense_flops(generator[:2], batch), dense_flops(discriminator[:2], batch)
    discriminator_update = g + 2 * d + 2 * d + 2 * (d - d_first)
    generator_update = g + d + d + g + (g - g_first)
    real = rng.uniform(-1, 1, (batch, gan.pixels)).astype(np.float32)
    noise = rng.standard_normal((batch, gan.noise_dim), dtype=np.float32)
    generator_noise = rng.standard_normal((batch, gan.noise_dim), dtype=np.float32)
    products = [(rng.standard_normal(a, dtype=np.float32), rng.standard_normal(b, dtype=np.float32))
                for a, b in gan_step_products(generator, discriminator, batch)]
    runners = {"pyai": lambda: gan.train_step(real, noise, generator_noise),
               "numpy matmuls alone (floor)": lambda: [a @ b for a, b in products]}
    if peer(peers, "tensorflow"):
        keras_step = keras_train_step(*to_keras(GAN(seed=0)))
        runners["tensorflow"] = lambda: [value.numpy() for value in keras_step(real, noise, generator_noise)]
    return Case(f"GAN training step {batch}x{gan.pixels}", discriminator_update + generator_update,
                "GFLOP/s", runners, "pyai >= 1.5x tensorflow and torch eager",
                inputs=(real, noise, generator_noise))


def attention_case(n, causal, backward, rng, peers, batch=1, heads=8, depth=64):
    """Attention at T = n, forward or forward + backward, beside the unfused way: the whole score
    matrix, a softmax, a product (TensorFlow as a tf.function, numpy with OpenBLAS), and beside
    PyTorch's fused torch.nn.functional.scaled_dot_product_attention (its backward by autograd).

    work = 4 B H T^2 D FLOPs forward (q k^T and p v), half of it with the causal mask; the
    backward's five products are 2.5 times that, so forward + backward counts 3.5 times.
    The unfused peers do the masked half too: only the FLOPs the result needs are counted.
    """
    q, k, v, do = (rng.standard_normal((batch, heads, n, depth), dtype=np.float32)
                   for _ in range(4))
    scale = np.float32(1 / np.sqrt(depth))
    visible = np.tril(np.ones((n, n), bool)) if causal else None

    def pyai_attention():
        o, lse = pyai.ops.attention(q, k, v, causal=causal, return_lse=True)
        if backward:
            return pyai.ops.attention_grad(do, q, k, v, o, lse, causal=causal)
        return o

    def numpy_attention():
        s = np.matmul(q, k.transpose(0, 1, 3, 2)) * scale
        if causal:
            s = np.where(visible, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        o = np.matmul(p, v)
        if not backward:
            return o
        dp = np.matmul(do, v.transpose(0, 1, 3, 2))
        ds = p * (dp - np.sum(do * o, -1, keepdims=True)) * scale
        return (np.matmul(ds, k), np.matmul(ds.transpose(0, 1, 3, 2), q),
                np.matmul(p.transpose(0, 1, 3, 2), do))

    runners = {"pyai": pyai_attention, "numpy": numpy_attention}
    if tf := peer(peers, "tensorflow"):
        runners["tensorflow"] = tensorflow_attention(tf, q, k, v, do, scale, visible, backward)
    if torch := peer(peers, "torch"):
        runners["torch"] = torch_attention(torch, q, k, v, do, causal, backward)
    work = 4.0 * batch * heads * n * n * depth * (0.5 if causal else 1) * (3.5 if backward else 1)
    name = (f"attention {'fwd+bwd' if backward else 'fwd'} T={n}{' causal' if causal else ''} "
            f"B={batch} H={heads} D={depth}")
    return Case(name, work, "GFLOP/s", runners, "pyai >= 1.2x torch SDPA" if n >= 1024 else "")


def tensorflow_attention(tf, q, k, v, do, scale, visible, backward):
    """The operands are the tf.function's arguments, never captured constants, which TensorFlow
    folds into the graph and computes once, when tracing."""
    tq, tk, tv, tdo = (tf.constant(x) for x in (q, k, v, do))
    mask = None if visible is None else tf.constant(visible)

    def forward(q, k, v):
        s = tf.matmul(q, k, transpose_b=True) * scale
        if mask is not None:
            s = tf.where(mask, s, -np.inf)
        return tf.matmul(tf.nn.softmax(s, axis=-1), v)

    @tf.function
    def run(q, k, v, do):
        if not backward:
            return [forward(q, k, v)]
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            o = forward(q, k, v)
        return tape.gradient(o, [q, k, v], output_gradients=do)

    return lambda: [x.numpy() for x in run(tq, tk, tv, tdo)]


def torch_attention(torch, q, k, v, do, causal, backward):
    """SDPA's default scale is 1 / sqrt(D), pyai's too."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    tq, tk, tv, tdo = (torch.from_numpy(x) for x in (q, k, v, do))
    if not backward:
        return lambda: sdpa(tq, tk, tv, is_causal=causal)
    leaves = [x.clone().requires_grad_() for x in (tq, tk, tv)]
    return lambda: torch.autograd.grad(sdpa(*leaves, is_causal=causal), leaves, tdo)


def framework_attention_cases(n, rng, peers, batch=1, heads=8, depth=64):
    """Causal attention forward + backward inside each framework: pyai's kernels through its
    adapter (pyai.torch, under autograd; pyai.keras, in a tf.function under a GradientTape) in
    the pyai column, the framework's own attention (PyTorch's SDPA; Keras's
    dot_product_attention) in its column. The adapter's cost is in pyai's time."""
    q, k, v, do = (rng.standard_normal((batch, heads, n, depth), dtype=np.float32) for _ in range(4))
    work = 4.0 * batch * heads * n * n * depth * 0.5 * 3.5   # as attention_case counts it
    name = f"attention fwd+bwd T={n} causal B={batch} H={heads} D={depth}, inside"
    result = []
    if torch := peer(peers, "torch"):
        import pyai.torch

        leaves = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
        tdo, sdpa = torch.from_numpy(do), torch.nn.functional.scaled_dot_product_attention
        runners = {"pyai": lambda: torch.autograd.grad(pyai.torch.attention(*leaves, causal=True), leaves, tdo),
                   "torch": lambda: torch.autograd.grad(sdpa(*leaves, is_causal=True), leaves, tdo)}
        result.append(Case(f"{name} PyTorch (pyai.torch)", work, "GFLOP/s", runners))
    if tf := peer(peers, "tensorflow"):
        import keras
        import pyai.keras

        def swap(x):   # (B, H, T, D) <-> Keras's layout, (B, T, H, D)
            return tf.transpose(x, (0, 2, 1, 3))

        def keras_attention(q, k, v):
            return swap(keras.ops.dot_product_attention(swap(q), swap(k), swap(v), is_causal=True))

        def gradients(attend):
            @tf.function
            def run(q, k, v, do):
                with tf.GradientTape() as tape:
                    tape.watch([q, k, v])
                    o = attend(q, k, v)
                return tape.gradient(o, [q, k, v], output_gradients=do)
            tensors = [tf.constant(x) for x in (q, k, v, do)]
            return lambda: [x.numpy() for x in run(*tensors)]

        runners = {"pyai": gradients(lambda q, k, v: pyai.keras.attention(q, k, v, causal=True)),
                   "tensorflow": gradients(keras_attention)}
        result.append(Case(f"{name} Keras (pyai.keras)", work, "GFLOP/s", runners))
    return result


def attention_cases(quick, rng, peers):
    sizes = (256,) if quick else (1024, 2048)
    return [attention_case(n, causal, backward, rng, peers)
            for n in sizes for backward in (False, True) for causal in (False, True)]


def cases(quick=False, seed=0, peers=None):
    """Every case of `pyai bench`, with the peers in `peers` (default: those installed)."""
    from pyai.bench.peers import installed

    rng = np.random.default_rng(seed)
    peers = installed() if peers is None else peers
    sizes = (256, 512) if quick else (256, 512, 1024, 2048)
    result = [matmul_case(size, rng, peers) for size in sizes]
    result.append(linear_case(256 if quick else 1024, 1024, 1024, rng, peers))
    result.append(linear_case(64, 784, 512, rng, peers))
    result.append(leaky_relu_case(2**20 if quick else 2**24, rng, peers))
    result.append(gan_step_case(rng, peers))
    result.extend(attention_cases(quick, rng, peers))
    result.extend(framework_attention_cases(256 if quick else 1024, rng, peers))
    result.extend(conv_cases(quick, rng, peers))
    result.append(dcgan_step_case(rng, peers))
    return result


# ---- Convolutions and the DCGAN ----

# (name, batch, height, width, in channels, out channels, kernel, stride, transpose): the DCGAN's
# layers at batch 64 (its discriminator sees 128 images: real and fake), and a larger 3x3 layer
CONV_SHAPES = [
    ("DCGAN G ConvT 7x7x128->14x14x64", 64, 7, 7, 128, 64, 4, 2, True),
    ("DCGAN G ConvT 14x14x64->28x28x32", 64, 14, 14, 64, 32, 4, 2, True),
    ("DCGAN G Conv 28x28x32->1", 64, 28, 28, 32, 1, 3, 1, False),
    ("DCGAN D Conv 28x28x1->14x14x64", 128, 28, 28, 1, 64, 3, 2, False),
    ("DCGAN D Conv 14x14x64->7x7x128", 128, 14, 14, 64, 128, 3, 2, False),
    ("Conv 56x56x64->64 3x3", 64, 56, 56, 64, 64, 3, 1, False),
]


def conv_case(shape, backward, rng, peers, alpha=0.2):
    """A Conv2D or Conv2DTranspose layer, 'same' padding: forward with bias + leaky_relu, or the
    backward (dx, dw and db from dy) of the convolution; TensorFlow as a tf.function
    (tf.nn.conv2d / conv2d_transpose, GradientTape), PyTorch eager with channels-last tensors
    (oneDNN's fast CPU layout). PyTorch pads a stride-2 'same' window symmetrically where
    TensorFlow and pyai put the odd row after: the same work.

    work = 2 N OH OW kh kw C O for
    Conv2D (OH, OW its output), 2 N H W kh kw O C for Conv2DTranspose (H, W its input); the
    backward does it twice (dx and dw).
    """
    name, batch, height, width, in_channels, out_channels, kernel, stride, transpose = shape
    x = rng.standard_normal((batch, height, width, in_channels), dtype=np.float32)
    w_shape = (kernel, kernel, out_channels, in_channels) if transpose else (kernel, kernel, in_channels, out_channels)
    w = (rng.standard_normal(w_shape, dtype=np.float32) / np.sqrt(kernel * kernel * in_channels)).astype(np.float32)
    b = rng.standard_normal(out_channels, dtype=np.float32)
    forward, gradient = ((pyai.ops.conv2d_transpose, pyai.ops.conv2d_transpose_grad) if transpose
                         else (pyai.ops.conv2d, pyai.ops.conv2d_grad))
    y = forward(x, w, b, stride=stride)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    windows = height * width if transpose else y.shape[1] * y.shape[2]
    work = 2.0 * batch * windows * kernel * kernel * in_channels * out_channels * (2 if backward else 1)
    if backward:
        runners = {"pyai": lambda: gradient(dy, x, w, stride=stride)}
    else:
        runners = {"pyai": lambda: forward(x, w, b, stride=stride, activation="leaky_relu", alpha=alpha)}
    if tf := peer(peers, "tensorflow"):
        runners["tensorflow"] = tf_conv(tf, x, w, b, dy, stride, transpose, backward, alpha)
    if torch := peer(peers, "torch"):
        runners["torch"] = torch_conv(torch, x, w, b, dy, stride, transpose, backward, alpha)
    return Case(f"{name} {'backward' if backward else 'forward'}, batch {batch}", work, "GFLOP/s", runners,
                "pyai >= 1.0x the faster peer")


def tf_conv(tf, x, w, b, dy, stride, transpose, backward, alpha):
    tx, tw, tb, tdy = (tf.constant(array) for array in (x, w, b, dy))

    def convolve(x, w):
        if transpose:
            return tf.nn.conv2d_transpose(x, w, dy.shape, stride, "SAME")
        return tf.nn.conv2d(x, w, stride, "SAME")

    @tf.function
    def tf_forward(x, w, b):
        return tf.nn.leaky_relu(convolve(x, w) + b, alpha=alpha)

    @tf.function
    def tf_backward(x, w, b, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, w, b])
            y = convolve(x, w) + b
        return tape.gradient(y, [x, w, b], output_gradients=dy)

    if backward:
        return lambda: [t.numpy() for t in tf_backward(tx, tw, tb, tdy)]
    return lambda: tf_forward(tx, tw, tb).numpy()


def torch_conv(torch, x, w, b, dy, stride, transpose, backward, alpha):
    functional = torch.nn.functional
    kernel = w.shape[0]
    # NHWC arrays seen as NCHW tensors with channels-last strides; kernels in PyTorch's layouts
    tx, tdy = (torch.from_numpy(array).permute(0, 3, 1, 2) for array in (x, dy))
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).contiguous(memory_format=torch.channels_last)
    tb = torch.from_numpy(b)
    if transpose:
        def convolve(x, w, b):
            return functional.conv_transpose2d(x, w, b, stride, padding=(kernel - stride) // 2)
    else:
        def convolve(x, w, b):
            return functional.conv2d(x, w, b, stride, padding=kernel // 2)
    if backward:
        leaves = [t.clone().requires_grad_() for t in (tx, tw, tb)]
        return lambda: torch.autograd.grad(convolve(*leaves), leaves, tdy)
    return lambda: functional.leaky_relu(convolve(tx, tw, tb), alpha, inplace=True)


def conv_cases(quick, rng, peers):
    shapes = CONV_SHAPES[:2] if quick else CONV_SHAPES
    return [conv_case(shape, backward, rng, peers) for shape in shapes for backward in (False, True)]


def layer_flops(network, example_shape):
    """Forward FLOPs per example of each layer of a Sequential of Dense, Conv2D, Conv2DTranspose,
    Reshape and Flatten layers, for inputs of `example_shape` (without the batch)."""
    from pyai.nn import Conv2D, Conv2DTranspose, Dense
    from pyai.kernels.common import conv_output_size, conv_transpose_output_size

    flops, shape = [], tuple(example_shape)
    for layer in network.layers:
        if isinstance(layer, Dense):
            flops.append(2.0 * layer.in_features * layer.out_features)
            shape = (layer.out_features,)
        elif isinstance(layer, (Conv2D, Conv2DTranspose)):
            size = conv_transpose_output_size if isinstance(layer, Conv2DTranspose) else conv_output_size
            out = tuple(size(shape[axis], layer.kernel_size[axis], layer.stride[axis], layer.padding)
                        for axis in (0, 1))
            windows = shape[0] * shape[1] if isinstance(layer, Conv2DTranspose) else out[0] * out[1]
            flops.append(2.0 * windows * math.prod(layer.kernel_size) * layer.in_channels * layer.out_channels)
            shape = (*out, layer.out_channels)
        else:
            flops.append(0.0)
            shape = layer.shape if layer.shape is not None else (math.prod(shape),)
    return flops


def dcgan_step_case(rng, peers, batch=64):
    """One training step of pyai.models.DCGAN at MNIST sizes, beside the same step in Keras
    (`keras_train_step` on `to_keras`'s twins: tf.function, GradientTape, Keras Adam) and in PyTorch
    eager (benchmarks/torch_twins.py adds it where torch is installed), from the same weights.

    work = the products the step needs, counted as gan_step_case counts the Dense GAN's (a weight
    or an input gradient costs what the layer's forward does): the discriminator update (G forward
    on n, D forward, weight and input gradients on 2n, the first layer's input gradient left
    out) and the generator update (G forward, D forward and input gradients on n, G weight
    gradients, G input gradients but the first layer's).
    """
    from pyai.models import DCGAN
    from pyai.reference.keras import keras_train_step, to_keras

    gan = DCGAN(seed=0)
    g = layer_flops(gan.generator, (gan.noise_dim,))
    d = layer_flops(gan.discriminator, (gan.pixels,))
    g_all, d_all = sum(g), sum(d)
    g_inputs, d_inputs = g_all - next(f for f in g if f), d_all - next(f for f in d if f)
    per_example = (g_all + 2 * (d_all + d_all + d_inputs)) + (g_all + d_all + d_all + g_all + g_inputs)
    real = rng.uniform(-1, 1, (batch, gan.pixels)).astype(np.float32)
    noise = rng.standard_normal((batch, gan.noise_dim), dtype=np.float32)
    generator_noise = rng.standard_normal((batch, gan.noise_dim), dtype=np.float32)
    runners = {"pyai": lambda: gan.train_step(real, noise, generator_noise)}
    if peer(peers, "tensorflow"):
        keras_step = keras_train_step(*to_keras(DCGAN(seed=0)), learning_rate=gan.config["learning_rate"],
                                      beta_1=gan.config["beta_1"])
        runners["tensorflow"] = lambda: [value.numpy() for value in keras_step(real, noise, generator_noise)]
    return Case(f"DCGAN training step, batch {batch}, 28x28", batch * per_example, "GFLOP/s", runners,
                "pyai >= 1.3x tensorflow and torch eager", inputs=(real, noise, generator_noise))
