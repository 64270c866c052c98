"""A known GPU load for the real-GPU tests and bench scripts: a bf16 8192^3 matrix-product loop on cuda:0 (tensor
cores near 100 %, power near the card's limit), in a thread of its own. Needs CUDA-enabled torch."""

from __future__ import annotations

import threading


class MatmulLoad:
    """Multiplies two bf16 8192 x 8192 matrices on cuda:0, 20 at a time, from `start()` until `stop()`."""

    def __init__(self) -> None:
        self.running, self._stop = threading.Event(), threading.Event()
        self._worker = threading.Thread(target=self._work, name="matmul-load", daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        """Start the loop and return once its first round finished (the GPU is busy)."""
        self._worker.start()
        if not self.running.wait(timeout):
            raise TimeoutError("the matrix-product loop never finished a round")

    def stop(self) -> None:
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=30)

    def _work(self) -> None:
        import torch

        left = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        right = torch.randn_like(left)
        while not self._stop.is_set():
            for _ in range(20):
                left @ right
            torch.cuda.synchronize()
            self.running.set()
