"""Character-level text for the GPT: a corpus that ships offline, its vocabulary, splits and batches.

The corpus is Python's own documentation text, `pydoc_data.topics` (what `help("topic")` prints),
part of the standard library: about 465,000 characters of English and code, about 100 distinct.
"""

import numpy as np

from pyai.checks import positive_int


def load_corpus():
    """The text of every pydoc topic, in a fixed (sorted) order, separated by blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip() for name in sorted(topics))


class Vocabulary:
    """The distinct characters of a text, sorted; a character's id is its index."""

    def __init__(self, characters):
        self.characters = "".join(sorted(set(characters)))
        self.ids = {character: index for index, character in enumerate(self.characters)}

    def __len__(self):
        return len(self.characters)

    def encode(self, text):
        unknown = sorted(set(text) - self.ids.keys())
        if unknown:
            raise ValueError(f"text: characters outside the vocabulary: {''.join(unknown)!r}")
        return np.array([self.ids[character] for character in text], dtype=np.int64)

    def decode(self, ids):
        return "".join(self.characters[index] for index in ids)


def split(ids, held_out_fraction=0.1):
    """(train, held_out): the first (1 - fraction) of the ids and the rest, so no window spans both."""
    cut = int(len(ids) * (1 - held_out_fraction))
    return ids[:cut], ids[cut:]


def random_batch(ids, batch_size, block_size, rng):
    """(x, y), each (batch_size, block_size): random windows of `ids` and the same shifted by one."""
    batch_size, block_size = positive_int("batch_size", batch_size), positive_int("block_size", block_size)
    if len(ids) <= block_size:
        raise ValueError(f"ids: {len(ids)} tokens do not fill one window of {block_size} + 1")
    starts = rng.integers(0, len(ids) - block_size, batch_size)
    windows = ids[starts[:, None] + np.arange(block_size + 1)]
    return windows[:, :-1], windows[:, 1:]
