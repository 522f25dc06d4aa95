"""PyTorch (eager) twins of the training steps that benchmarks/test_gan.py, test_gpt.py and
gpu_training.py time: the same layers, sizes and optimizer, in the plainest PyTorch, on the CPU
or (device="cuda") on a GPU. Imported only where torch is installed (`pip install pyai[bench]`).

    step = gan_step(gan)                          # GAN.train_step from `gan`'s weights
    step = dcgan_step(dcgan)                      # DCGAN.train_step, channels-last convolutions
    step = gpt_step(sizes, ids, targets)          # one GPT Adam step at pyai's sizes, PyTorch's init
A step takes numpy arrays, copies them to the device and returns the losses as Python floats
(which waits for the device), as a pyai step does.
"""

import torch
import torch.nn.functional as F
from torch import nn

ADAM_EPSILON = 1e-7   # pyai's and Keras's default; PyTorch's is 1e-8


def dense_stack(network, output_activation):
    """nn.Sequential of Linear + LeakyReLU computing pyai's Dense stack, with its weights."""
    layers = []
    for dense in network.layers:
        linear = nn.Linear(dense.in_features, dense.out_features)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(dense.weight.T))   # pyai's weight is (in, out)
            linear.bias.copy_(torch.from_numpy(dense.bias))
        layers += [linear, nn.LeakyReLU(dense.alpha)]
    return nn.Sequential(*layers[:-1], output_activation)


def gan_step(gan, device="cpu"):
    """step(real, noise, generator_noise) -> (discriminator loss, generator loss), as
    GAN.train_step does it: a discriminator update on real (target 1) and fake (0) images, then a
    generator update through the updated discriminator (target 1); BCE from the logits, one Adam
    per network. The discriminator's weights are frozen in the generator's update, so neither
    step computes a gradient pyai's step does not."""
    generator = dense_stack(gan.generator, nn.Tanh())
    discriminator = dense_stack(gan.discriminator, nn.Identity())   # logits
    return adversarial_step(generator.to(device), discriminator.to(device), gan.config, device)


def adversarial_step(generator, discriminator, config, device="cpu"):
    """The step of gan_step for any generator and discriminator (of logits), Adam as in `config`."""
    betas = (config["beta_1"], 0.999)
    generator_adam, discriminator_adam = (
        torch.optim.Adam(network.parameters(), config["learning_rate"], betas=betas, eps=ADAM_EPSILON)
        for network in (generator, discriminator))
    loss = nn.BCEWithLogitsLoss()

    def step(real, noise, generator_noise):
        real, noise, generator_noise = (torch.from_numpy(x).to(device) for x in (real, noise, generator_noise))
        n = len(real)
        with torch.no_grad():
            images = torch.cat([real, generator(noise)])                         # (2n, pixels)
        targets = torch.cat([torch.ones(n, 1, device=device), torch.zeros(n, 1, device=device)])
        discriminator_loss = loss(discriminator(images), targets)
        discriminator_adam.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        discriminator_adam.step()

        discriminator.requires_grad_(False)
        generator_loss = loss(discriminator(generator(generator_noise)), torch.ones(n, 1, device=device))
        generator_adam.zero_grad(set_to_none=True)
        generator_loss.backward()
        generator_adam.step()
        discriminator.requires_grad_(True)
        return discriminator_loss.item(), generator_loss.item()

    return step


class Block(nn.Module):
    """GPT-2's pre-norm block, as pyai's TransformerBlock: x + attn(ln_1(x)), then + mlp(ln_2(.))."""

    def __init__(self, channels, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.c_attn, self.c_proj = nn.Linear(channels, 3 * channels), nn.Linear(channels, channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * channels, channels))

    # x is (B, T, C)
    def forward(self, x):
        batch, length, channels = x.shape
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2)       # (B, nh, T, hs)
                   for t in self.c_attn(self.ln_1(x)).split(channels, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(batch, length, channels))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token and position embeddings, the blocks, a final LayerNorm, the head tied to wte."""

    def __init__(self, vocab_size, block_size, layers, heads, channels):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, channels), nn.Embedding(block_size, channels)
        self.blocks = nn.Sequential(*(Block(channels, heads) for _ in range(layers)))
        self.ln_f = nn.LayerNorm(channels)

    # ids is (B, T) -> logits (B, T, vocab_size)
    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        return F.linear(self.ln_f(self.blocks(x)), self.wte.weight)


def gpt_step(sizes, ids, targets, learning_rate=1e-3, device="cpu"):
    """step() -> loss: forward, cross-entropy, backward and one Adam step of a GPT of `sizes`
    (vocab_size, block_size, layers, heads, channels) on ids and targets, (B, T) integers."""
    model = GPT(**sizes).to(device)
    adam = torch.optim.Adam(model.parameters(), learning_rate, eps=ADAM_EPSILON)
    ids, targets = torch.from_numpy(ids).to(device), torch.from_numpy(targets).to(device)

    def step():
        logits = model(ids)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()
        return loss.item()

    return step


class ToImages(nn.Module):
    """(n, h*w*c) in pyai's NHWC order -> (n, c, h, w) tensors, as pyai's Reshape feeds its convs."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.view(-1, *self.shape).permute(0, 3, 1, 2)


class ToRows(nn.Module):
    """(n, c, h, w) -> (n, h*w*c) in NHWC order, as pyai's (and Keras's) Flatten."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).reshape(len(x), -1)


def torch_layer(layer):
    """The PyTorch modules computing one pyai layer of a DCGAN, with its weights. 'same' padding of
    a stride-2 3x3 Conv2D is symmetric in PyTorch (TensorFlow pads the odd row after): the same
    work, the windows shifted by a pixel."""
    from pyai.nn import Conv2D, Conv2DTranspose, Dense, Flatten

    if isinstance(layer, Flatten):
        return [ToRows()]
    if not layer.parameters():
        return [ToImages(layer.shape)]
    activation = {"leaky_relu": nn.LeakyReLU(layer.alpha), "tanh": nn.Tanh(), None: nn.Identity()}
    if isinstance(layer, Dense):
        module, weight = nn.Linear(layer.in_features, layer.out_features), layer.weight.T
    elif isinstance(layer, Conv2DTranspose):   # (kh, kw, out, in) -> (in, out, kh, kw)
        module = nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                    padding=(layer.kernel_size[0] - layer.stride[0]) // 2)
        weight = layer.weight.transpose(3, 2, 0, 1)
    else:                                        # Conv2D (kh, kw, in, out) -> (out, in, kh, kw)
        assert isinstance(layer, Conv2D)
        module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                           padding=layer.kernel_size[0] // 2)
        weight = layer.weight.transpose(3, 2, 0, 1)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight.copy()))
        module.bias.copy_(torch.from_numpy(layer.bias))
    return [module, activation[layer.activation]]


def dcgan_step(gan, device="cpu"):
    """DCGAN.train_step in PyTorch eager (channels-last convolutions, oneDNN's fast CPU layout):
    the GAN step of gan_step on the DCGAN's networks."""
    networks = [nn.Sequential(*(module for layer in network.layers for module in torch_layer(layer)))
                for network in (gan.generator, gan.discriminator)]
    generator, discriminator = (network.to(device, memory_format=torch.channels_last) for network in networks)
    return adversarial_step(generator, discriminator, gan.config, device)
