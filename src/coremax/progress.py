"""Progress of long loops: a bar with the running loss on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import sys
import time


class Progress:
    """`update(n, loss=...)` per step. Uses tqdm when stdout is a terminal; otherwise logs an event
    every `interval_s` seconds (CI, nohup, cluster jobs), so logs stay readable without carriage returns."""

    def __init__(self, total: int, desc: str, log, interval_s: float = 30.0, enabled: bool = True,
                 tty: bool | None = None):
        self.total, self.desc, self.log, self.interval_s = total, desc, log, interval_s
        self.count, self.postfix = 0, {}
        self.bar = None
        self.enabled = enabled
        tty = sys.stdout.isatty() if tty is None else tty
        if enabled and tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, file=sys.stdout, dynamic_ncols=True, leave=False)
        self._last = time.monotonic()

    def update(self, n: int = 1, **postfix) -> None:
        self.count += n
        self.postfix = {k: round(float(v), 5) for k, v in postfix.items()}
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
        elif self.enabled and time.monotonic() - self._last >= self.interval_s:
            self._last = time.monotonic()
            self.log.info("progress", loop=self.desc, step=self.count, total=self.total, **self.postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
