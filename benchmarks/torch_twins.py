"""PyTorch (eager, CPU) twins of the training steps that benchmarks/test_gan.py and test_gpt.py
time: the same layers, sizes and optimizer, in the plainest PyTorch. Imported only where torch
is installed (`pip install pyai[bench]`).

    step = gan_step(gan)                  # GAN.train_step from `gan`'s weights
    step = gpt_step(sizes, batch)         # one GPT Adam step at pyai's sizes, PyTorch's init
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


def gan_step(gan):
    """step(real, noise, generator_noise) -> (discriminator loss, generator loss), as
    GAN.train_step does it: a discriminator update on real (target 1) and fake (0) images, then a
    generator update through the updated discriminator (target 1); BCE from the logits, one Adam
    per network. The discriminator's weights are frozen in the generator's update, so neither
    step computes a gradient pyai's step does not."""
    generator = dense_stack(gan.generator, nn.Tanh())
    discriminator = dense_stack(gan.discriminator, nn.Identity())   # logits
    betas = (gan.config["beta_1"], 0.999)
    generator_adam, discriminator_adam = (
        torch.optim.Adam(network.parameters(), gan.config["learning_rate"], betas=betas, eps=ADAM_EPSILON)
        for network in (generator, discriminator))
    loss = nn.BCEWithLogitsLoss()

    def step(real, noise, generator_noise):
        real, noise, generator_noise = (torch.from_numpy(x) for x in (real, noise, generator_noise))
        n = len(real)
        with torch.no_grad():
            images = torch.cat([real, generator(noise)])                         # (2n, pixels)
        targets = torch.cat([torch.ones(n, 1), torch.zeros(n, 1)])
        discriminator_loss = loss(discriminator(images), targets)
        discriminator_adam.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        discriminator_adam.step()

        discriminator.requires_grad_(False)
        generator_loss = loss(discriminator(generator(generator_noise)), torch.ones(n, 1))
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
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        return F.linear(self.ln_f(self.blocks(x)), self.wte.weight)


def gpt_step(sizes, ids, targets, learning_rate=1e-3):
    """step() -> loss: forward, cross-entropy, backward and one Adam step of a GPT of `sizes`
    (vocab_size, block_size, layers, heads, channels) on ids and targets, (B, T) integers."""
    model = GPT(**sizes)
    adam = torch.optim.Adam(model.parameters(), learning_rate, eps=ADAM_EPSILON)
    ids, targets = torch.from_numpy(ids), torch.from_numpy(targets)

    def step():
        logits = model(ids)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()
        return loss.item()

    return step
