"""Which GPUs a process reports: CUDA_VISIBLE_DEVICES as CUDA reads it, then one GPU per local rank."""

from __future__ import annotations

from collections.abc import Sequence


class GpuUnavailable(Exception):
    """Why this process reports no GPU (logged once); `by_design` when that is the rule, not a fault."""

    def __init__(self, reason: str, by_design: bool = False):
        super().__init__(reason)
        self.by_design = by_design


def visible_devices(cuda_visible_devices: str | None, uuids: Sequence[str]) -> list[int]:
    """NVML indices of the devices a CUDA process sees, in CUDA order.

    `None` (unset) means all. Entries are indices or `GPU-` UUID prefixes; as in CUDA, the list ends at the first
    entry that matches no device. Index entries assume CUDA's order equals NVML's (PCI bus order; set
    `CUDA_DEVICE_ORDER=PCI_BUS_ID` on mixed-model nodes). MIG instances raise `GpuUnavailable`.
    """
    if cuda_visible_devices is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for token in (part.strip() for part in cuda_visible_devices.split(",")):
        if token.startswith("MIG-"):
            raise GpuUnavailable("CUDA_VISIBLE_DEVICES names MIG instances; MIG devices are not monitored")
        if token.lstrip("-").isdigit():
            index = int(token)
            found = index if 0 <= index < len(uuids) else None
        else:
            matches = [i for i, uuid in enumerate(uuids) if token and uuid.startswith(token)]
            found = matches[0] if len(matches) == 1 else None
        if found is None:
            break
        if found not in chosen:
            chosen.append(found)
    return chosen


def devices_for_rank(visible: Sequence[int], local_rank: int, local_world_size: int) -> list[int]:
    """The visible devices this process reports (see the module docstring for the rule)."""
    if local_world_size <= 1:
        return list(visible)
    if len(visible) == 1:
        return list(visible)
    if 0 <= local_rank < len(visible):
        return [visible[local_rank]]
    return []
