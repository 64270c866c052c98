"""``watch(monitor, model, every=N)``: gradient and parameter norms (per parameter and total, as metrics) and
histograms (``monitor.log_histogram``) of a torch model every N training steps, as ``wandb.watch`` does.

    handle = watch(monitor, model, every=100)           # gradients (the default); log="parameters" or "all"
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y); optimizer.zero_grad(); loss.backward(); optimizer.step()
        monitor.log_metrics({"loss": loss.item()}, step)
    handle.remove()

How: a forward pre-hook on ``model`` counts training steps (forward passes in training mode with gradients
enabled; the first is step 0, so it matches a loop that logs ``step`` from 0; ``step=`` takes a callable giving
your own step instead). On every N-th step the parameters' norms are taken before the forward pass and the
gradients' norms when backward has computed them all (one ``torch.autograd.graph.register_multi_grad_hook``):
the raw gradients of that backward pass, before clipping and before DDP averages them. Norms are handed to the
monitor as tensors and read at its next drain, so the training thread never waits for the device; histograms
copy each tensor to the CPU (keep ``every`` large for big models, or ``histograms=False``).

Metric keys: ``grad_norm/<parameter>``, ``grad_norm/total``, ``param_norm/<parameter>``, ``param_norm/total``
(stored normalised: ``grad_norm_fc1_weight``); histograms ``grad.<parameter>``, ``param.<parameter>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

try:
    import torch
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError("trainmon.integrations.torch needs torch: pip install 'trainmon[torch]'") from error

__all__ = ["WatchHandle", "watch"]

log = logging.getLogger("trainmon.integrations")

LOG_CHOICES = ("gradients", "parameters", "all")


class WatchHandle:
    """What `watch` installed; `remove()` (or leaving a ``with`` block) takes the hooks off."""

    def __init__(self, monitor: Any, model: Any, every: int, what: str, histograms: bool, per_parameter: bool,
                 step: Callable[[], int] | None):
        self.monitor = monitor
        self.every = every
        self.histograms = histograms
        self.per_parameter = per_parameter
        self.gradients = what in ("gradients", "all")
        self.parameters = what in ("parameters", "all")
        self.steps = 0  # training forward passes seen
        self._step = step
        self._armed_step: int | None = None
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.tensors = [p for _, p in named]
        self._hooks = [model.register_forward_pre_hook(self._before_forward)]
        self._pending: Any = None  # the gradient hook of a watched step, installed for that step only

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._drop_pending()

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.remove()
            self._pending = None

    def __enter__(self) -> WatchHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # --- hooks ---

    def _before_forward(self, module: Any, args: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        count = self.steps
        self.steps = count + 1
        if self._pending is not None:  # the previous watched step's backward is over (or never came)
            self._drop_pending()
        if count % self.every:
            self._armed_step = None
            return
        step = self._step() if self._step is not None else count
        self._armed_step = step
        if self.parameters:
            with torch.no_grad():
                self._log("param", self.names, [p.detach() for p in self.tensors], step)
        if self.gradients and self.tensors:  # one hook, for this step's backward only: nothing between
            self._pending = torch.autograd.graph.register_multi_grad_hook(self.tensors, self._after_backward,
                                                                          mode="all")

    def _after_backward(self, grads: tuple[Any, ...]) -> None:
        step = self._armed_step
        if step is None:
            return
        self._armed_step = None
        present = [(name, grad) for name, grad in zip(self.names, grads, strict=True) if grad is not None]
        if present:
            with torch.no_grad():
                self._log("grad", [name for name, _ in present], [grad.detach() for _, grad in present], step)

    def _log(self, kind: str, names: list[str], tensors: list[Any], step: int) -> None:
        try:
            norms = list(torch._foreach_norm(tensors))
            total = torch.linalg.vector_norm(torch.stack([norm.float().to(norms[0].device) for norm in norms]))
            metrics: dict[str, Any] = {f"{kind}_norm/total": total}
            if self.per_parameter:
                metrics.update({f"{kind}_norm/{name}": norm for name, norm in zip(names, norms, strict=True)})
            self.monitor.log_metrics(metrics, step)  # tensors: read at the monitor's drain, not here
            if self.histograms:
                for name, tensor in zip(names, tensors, strict=True):
                    self.monitor.log_histogram(f"{kind}.{name}", tensor, step=step)
        except Exception as error:  # noqa: BLE001 - watching must never break training
            log.warning("trainmon: watch could not log %s norms at step %s: %s", kind, step, error)


def watch(monitor: Any, model: Any, every: int = 100, log: str = "gradients", *, histograms: bool = True,
          per_parameter: bool = True, step: Callable[[], int] | None = None) -> WatchHandle:
    """Log gradient (``log="gradients"``), parameter (``"parameters"``) or both (``"all"``) norms of `model`
    every `every` training steps to `monitor` (a `TrainingMonitor`), per parameter (``per_parameter``) and in
    total, with histograms (``histograms``). Returns the handle whose ``remove()`` stops it."""
    if log not in LOG_CHOICES:
        raise ValueError(f"log must be one of {', '.join(LOG_CHOICES)}, got {log!r}")
    if type(every) is not int or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"watch needs a torch.nn.Module, got {type(model).__name__}")
    return WatchHandle(monitor, model, every, log, histograms, per_parameter, step)
