"""Write the golden files tests/test_golden.py checks every backend against: TensorFlow's outputs
for small inputs at awkward shapes (primes, sizes one past a tile, Tq < Tk causal), so that a
machine without TensorFlow (the GPU machine) can still compare with it.

Run on a CPU machine with TensorFlow, from the repository root:
    python tests/make_golden.py [GROUP ...]      (GROUP: matmul, linear, ..., activation; default all)
It overwrites the groups' tests/golden/*.npz (about 1.4 MB together, float32 with the seeds
fixed). Each file holds the inputs under their op argument names and TensorFlow's outputs under
`expected_*`. The groups up to adam draw from one generator in order, so they are remade together.
"""

import pathlib
import sys

import numpy as np
import tensorflow as tf

GOLDEN = pathlib.Path(__file__).parent / "golden"
rng = np.random.default_rng(20251125)


def normal(*shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def save(name, **arrays):
    np.savez_compressed(GOLDEN / f"{name}.npz", **{key: np.asarray(value) for key, value in arrays.items()})


def matmul_cases():
    cases = [(37, 53, 29, ta, tb) for ta in (False, True) for tb in (False, True)]
    cases += [(129, 67, 130, False, False), (129, 67, 130, True, True), (1, 131, 5, False, True)]
    for m, n, k, transpose_a, transpose_b in cases:
        a = normal(*((k, m) if transpose_a else (m, k)))
        b = normal(*((n, k) if transpose_b else (k, n)))
        expected = tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
        save(f"matmul_{m}x{n}x{k}_ta{int(transpose_a)}_tb{int(transpose_b)}", a=a, b=b,
             transpose_a=transpose_a, transpose_b=transpose_b, expected=expected.numpy())


def linear_cases():
    activations = {"none": None, "leaky_relu": lambda y: tf.nn.leaky_relu(y, 0.2), "relu": tf.nn.relu,
                   "sigmoid": tf.sigmoid, "tanh": tf.tanh}
    for batch, features_in, features_out, names in [(7, 13, 5, list(activations)), (65, 100, 131, ["sigmoid"])]:
        x, w, b = normal(batch, features_in), normal(features_in, features_out), normal(features_out)
        for name in names:
            activation = activations[name]
            y = tf.matmul(x, w) + b
            y = y if activation is None else activation(y)
            save(f"linear_{batch}x{features_in}x{features_out}_{name}", x=x, w=w, b=b, activation=name,
                 expected=y.numpy())


def tensorflow_attention(q, k, v, causal, scale):
    s = tf.matmul(q, k, transpose_b=True) * scale
    if causal:
        n_queries, n_keys = s.shape[-2:]
        lower = tf.linalg.band_part(tf.ones((n_keys, n_keys), tf.bool), -1, 0)
        s = tf.where(lower[n_keys - n_queries:], s, -np.inf)
    return tf.matmul(tf.nn.softmax(s, axis=-1), v), tf.reduce_logsumexp(s, axis=-1)


def attention_cases():
    for batch, heads, n_queries, n_keys, depth, causal in [(2, 3, 37, 37, 16, False), (2, 3, 37, 37, 16, True),
                                                           (1, 2, 17, 33, 24, True), (1, 2, 33, 17, 24, False),
                                                           (1, 1, 70, 70, 64, True), (1, 1, 40, 45, 128, True)]:
        q, do = normal(batch, heads, n_queries, depth), normal(batch, heads, n_queries, depth)
        k, v = normal(batch, heads, n_keys, depth), normal(batch, heads, n_keys, depth)
        scale = 1.0 / np.sqrt(depth)
        variables = [tf.Variable(x) for x in (q, k, v)]
        with tf.GradientTape() as tape:
            o, lse = tensorflow_attention(*variables, causal, scale)
        dq, dk, dv = tape.gradient(o, variables, output_gradients=tf.constant(do))
        save(f"attention_{batch}x{heads}x{n_queries}x{n_keys}x{depth}_{'causal' if causal else 'full'}",
             q=q, k=k, v=v, do=do, causal=causal, expected_o=o.numpy(), expected_lse=lse.numpy(),
             expected_dq=dq.numpy(), expected_dk=dk.numpy(), expected_dv=dv.numpy())


def layer_norm_cases():
    for shape, epsilon in [((5, 7, 33), 1e-5), ((3, 300), 1e-3), ((1, 1), 1e-5)]:
        x, dy = normal(*shape, scale=3.0) + 1.5, normal(*shape)
        gamma, beta = normal(shape[-1]), normal(shape[-1])
        layer = tf.keras.layers.LayerNormalization(epsilon=epsilon)
        layer.build(shape)
        layer.set_weights([gamma, beta])
        x_variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = layer(x_variable)
        dx, dgamma, dbeta = tape.gradient(y, [x_variable, layer.gamma, layer.beta], output_gradients=tf.constant(dy))
        mean, variance = tf.nn.moments(tf.constant(x, tf.float64), axes=[-1])
        save(f"layer_norm_{'x'.join(map(str, shape))}_eps{epsilon:g}", x=x, gamma=gamma, beta=beta, dy=dy,
             epsilon=epsilon, expected_y=y.numpy(), expected_mean=mean.numpy().astype(np.float32),
             expected_rstd=(1 / np.sqrt(variance.numpy() + epsilon)).astype(np.float32),
             expected_dx=dx.numpy(), expected_dgamma=dgamma.numpy(), expected_dbeta=dbeta.numpy())


def gelu_cases():
    x = np.concatenate([np.linspace(-8, 8, 801, dtype=np.float32), normal(1000, scale=2.0)])
    dy = normal(x.size)
    x_variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = tf.nn.gelu(x_variable, approximate=True)
    save("gelu_1801", x=x, dy=dy, expected_y=y.numpy(),
         expected_dx=tape.gradient(y, x_variable, output_gradients=tf.constant(dy)).numpy())


def softmax_cases():
    for shape, scale in [((7, 1000), 30.0), ((3, 5, 33), 1.0)]:
        x = normal(*shape, scale=scale)
        save(f"softmax_{'x'.join(map(str, shape))}", x=x, expected=tf.nn.softmax(x, axis=-1).numpy())


def softmax_cross_entropy_cases():
    for rows, vocabulary in [(13, 257), (9, 1031)]:
        logits, targets = normal(rows, vocabulary, scale=4.0), rng.integers(0, vocabulary, rows)
        logits_variable = tf.Variable(logits)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits_variable))
        save(f"softmax_cross_entropy_{rows}x{vocabulary}", logits=logits, targets=targets,
             expected_loss=loss.numpy(), expected_dlogits=tape.gradient(loss, logits_variable).numpy())


def embedding_cases():
    vocab_size, channels = 50, 24
    ids, table = rng.integers(0, vocab_size, (4, 9)), normal(vocab_size, channels)
    ids[0, :3] = 7   # repeats add up in the gradient
    dout = normal(4, 9, channels)
    table_variable = tf.Variable(table)
    with tf.GradientTape() as tape:
        out = tf.nn.embedding_lookup(table_variable, ids)
    dtable = tf.convert_to_tensor(tape.gradient(out, table_variable, output_gradients=tf.constant(dout)))
    save("embedding_50x24", ids=ids, table=table, dout=dout, vocab_size=vocab_size, expected_out=out.numpy(),
         expected_dtable=dtable.numpy())


def adam_cases():
    param, grads = normal(1001), normal(3, 1001)
    variable = tf.Variable(param)
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
    for grad in grads:
        optimizer.apply_gradients([(tf.constant(grad), variable)])
    save("adam_1001_3steps", param=param, grads=grads, lr=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6,
         expected_param=variable.numpy())


def conv_cases():
    """Conv2D and Conv2DTranspose with bias and tanh, and the gradients of the pre-activation; drawn
    from a generator of their own, so that these files come out the same when made alone."""
    conv_rng = np.random.default_rng(20261130)
    for n, h, w, c, kh, kw, o, stride, padding, transpose in [(3, 7, 5, 3, 3, 3, 4, 2, "same", False),
                                                               (2, 6, 9, 5, 2, 3, 6, (1, 2), "valid", False),
                                                               (2, 4, 3, 5, 4, 4, 3, 2, "same", True)]:
        x = conv_rng.standard_normal((n, h, w, c)).astype(np.float32)
        kernel = conv_rng.standard_normal((kh, kw, o, c) if transpose else (kh, kw, c, o)).astype(np.float32)
        b = conv_rng.standard_normal(o).astype(np.float32)
        strides = (stride, stride) if isinstance(stride, int) else stride
        variables = [tf.Variable(array) for array in (x, kernel, b)]
        with tf.GradientTape() as tape:
            if transpose:
                shape = (n, h * strides[0], w * strides[1], o)   # Keras's 'same' sizes
                pre = tf.nn.conv2d_transpose(variables[0], variables[1], shape, strides, padding.upper())
            else:
                pre = tf.nn.conv2d(variables[0], variables[1], strides, padding.upper())
            pre = pre + variables[2]
        dy = conv_rng.standard_normal(pre.shape).astype(np.float32)
        dx, dw, db = tape.gradient(pre, variables, output_gradients=tf.constant(dy))
        save(f"conv2d{'_transpose' if transpose else ''}_{n}x{h}x{w}x{c}_k{kh}x{kw}x{o}_{padding}", x=x, w=kernel,
             b=b, dy=dy, stride=np.array(strides), padding=padding, transpose=transpose,
             expected_y=tf.tanh(pre).numpy(), expected_dx=dx.numpy(), expected_dw=dw.numpy(),
             expected_db=db.numpy())


def gradient(function, x, dy):
    """(function(x), d/dx of sum(dy * function(x))) through a GradientTape."""
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = function(variable)
    return y.numpy(), tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()


def activation_cases():
    """The GAN's activations and loss: leaky ReLU (x = 0 exactly among the inputs), sigmoid and
    tanh out to +-100 (saturated), and binary cross-entropy from logits out to +-1e4 with targets
    0, 1 and between; drawn from a generator of their own."""
    own = np.random.default_rng(20261206)
    wide = np.concatenate([np.linspace(-100, 100, 1001, dtype=np.float32),
                           (4 * own.standard_normal(1002)).astype(np.float32)])
    x = np.concatenate([wide[:1000], np.zeros(31, np.float32)]) * np.float32(0.05)
    dy = own.standard_normal(x.size).astype(np.float32)
    y, dx = gradient(lambda v: tf.nn.leaky_relu(v, 0.2), x, dy)
    save("leaky_relu_1031", x=x, dy=dy, alpha=0.2, expected_y=y, expected_dx=dx)
    for name, function in (("sigmoid", tf.sigmoid), ("tanh", tf.tanh)):
        dy = own.standard_normal(wide.size).astype(np.float32)
        y, dx = gradient(function, wide, dy)
        save(f"{name}_2003", x=wide, dy=dy, expected_y=y, expected_dx=dx)
    for rows, columns in ((13, 7), (1, 1031)):
        logits = (3 * own.standard_normal((rows, columns))).astype(np.float32)
        logits.flat[:4] = [1e4, -1e4, 50.0, -50.0]
        targets = own.uniform(0, 1, (rows, columns)).astype(np.float32)
        targets.flat[::3] = np.round(targets.flat[::3])
        loss, dlogits = gradient(lambda z: tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(targets, z)),
                                 logits, np.float32(1))
        save(f"binary_crossentropy_logits_{rows}x{columns}", logits=logits, targets=targets, expected_loss=loss,
             expected_dlogits=dlogits)


GROUPS = {"matmul": matmul_cases, "linear": linear_cases, "attention": attention_cases,
          "layer_norm": layer_norm_cases, "gelu": gelu_cases, "softmax": softmax_cases,
          "softmax_cross_entropy": softmax_cross_entropy_cases, "embedding": embedding_cases, "adam": adam_cases,
          "conv": conv_cases, "activation": activation_cases}


if __name__ == "__main__":
    unknown = sorted(set(sys.argv[1:]) - GROUPS.keys())
    if unknown:
        raise SystemExit(f"unknown groups {unknown}; groups: {', '.join(GROUPS)}")
    GOLDEN.mkdir(exist_ok=True)
    for name, make in GROUPS.items():
        if not sys.argv[1:] or name in sys.argv[1:]:
            make()
    files = sorted(GOLDEN.glob("*.npz"))
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.2f} MB in {GOLDEN}")
