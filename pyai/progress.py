"""Progress of a training run: a tqdm bar on a terminal, plain lines anywhere else.

A bar redraws itself with carriage returns, which a file or a CI log keeps as thousands of
frames. So when stderr is not a terminal, `bar(...)` returns a `Lines` instead, with the part of
tqdm's interface the training loops use; it prints one line each time the loop asks for a
refresh (after an epoch, or an evaluation), and nothing on the steps between.
"""

import sys
import time


def bar(iterable=None, *, total=None, initial=0, desc, unit, disable=False):
    """A tqdm bar when stderr is a terminal, else `Lines` with the same arguments. tqdm is
    imported here, when a loop starts: `import pyai` works without it (a GPU box offline)."""
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm as kind
    else:
        kind = Lines
    return kind(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable)


class Lines:
    """tqdm's update, set_postfix, refresh and iteration, as one plain line per refresh on stderr:
    `training: 3/30 epochs, loss=0.1234, 0.5 s`."""

    def __init__(self, iterable=None, *, total=None, initial=0, desc, unit, disable=False):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = len(iterable) if total is None and iterable is not None else total
        self.n, self.postfix, self.start = initial, {}, time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1

    def update(self, n=1):
        self.n += n

    def set_postfix(self, refresh=True, **values):
        self.postfix = values
        if refresh:
            self.refresh()

    def refresh(self):
        if self.disable:
            return
        # set_postfix runs inside an iteration, before __iter__ counts it
        done = self.n + 1 if self.iterable is not None else self.n
        fields = [f"{done}/{self.total} {self.unit}s",
                  *(f"{name}={value}" for name, value in self.postfix.items()),
                  f"{time.perf_counter() - self.start:.1f} s"]
        print(f"{self.desc}: {', '.join(fields)}", file=sys.stderr, flush=True)
