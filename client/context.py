"""The run's context, captured once at start: where the code came from and what it ran on.

``capture_context()`` returns a JSON object for the run registration body (field ``context``; opt out with
``capture_context=False`` or ``TRAINMON_CAPTURE_CONTEXT=false``):

- ``git``: ``commit``, ``branch`` (absent on a detached HEAD), ``dirty`` (tracked files differ from HEAD) and
  ``diff_sha256`` (SHA-256 of ``git diff HEAD``, when dirty; absent when the diff is over `MAX_DIFF_BYTES`);
- ``command`` (``argv``, ``executable``, ``cwd``), ``python`` (version, implementation), ``platform``,
  ``hostname``, ``world_size``;
- ``packages``: versions of the installed frameworks (`PACKAGES`), read with ``importlib.metadata`` (nothing is
  imported to read them);
- ``gpus``, ``driver_version``, ``cuda_driver_version`` when NVML answers (``pynvml``, imported only here, if
  installed), and ``cuda_runtime`` when torch is already imported.

Every part is bounded in time (`GIT_TIMEOUT` per git call, `NVML_TIMEOUT` for NVML) and optional: git missing,
outside a repository, NVML missing or slow -> that part is absent, never an error. The whole object stays under
`MAX_CONTEXT_BYTES` as JSON (the API accepts up to 64 KiB: a context can never get a run refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any

log = logging.getLogger("trainmon.client")

#: distributions whose versions are recorded when installed
PACKAGES = ("torch", "transformers", "accelerate", "lightning", "pytorch-lightning", "keras", "tensorflow", "jax",
            "numpy", "deepspeed", "trainmon")
GIT_TIMEOUT = 2.0
GIT_BUDGET = 4.0  # all git calls together
NVML_TIMEOUT = 2.0
MAX_DIFF_BYTES = 64 * 1024**2
MAX_ARGS = 256
MAX_ARG_CHARS = 1024
#: the context as JSON stays under this (the API's limit is 64 KiB)
MAX_CONTEXT_BYTES = 32 * 1024


def capture_context(*, world_size: int | None = None, cwd: str | None = None,
                    env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The run context as a JSON object (see the module's docstring); never raises."""
    started = time.monotonic()
    nvml: dict[str, Any] = {}
    probe = threading.Thread(target=_nvml_into, args=(nvml,), name="trainmon-context-nvml", daemon=True)
    probe.start()  # NVML can be slow to initialise: in parallel with git, bounded below
    context: dict[str, Any] = {}
    try:
        git = git_state(cwd, env)
        if git:
            context["git"] = git
        context["command"] = {"argv": [str(arg)[:MAX_ARG_CHARS] for arg in sys.argv[:MAX_ARGS]],
                              "executable": sys.executable, "cwd": cwd or os.getcwd()}
        context["python"] = {"version": platform.python_version(), "implementation": platform.python_implementation()}
        context["platform"] = platform.platform()
        context["hostname"] = socket.gethostname()
        if world_size is not None:
            context["world_size"] = int(world_size)
        context["packages"] = package_versions()
        torch = sys.modules.get("torch")  # only when the trainer imported it already
        cuda = getattr(getattr(torch, "version", None), "cuda", None)
        if isinstance(cuda, str):
            context["cuda_runtime"] = cuda
    except Exception as error:  # noqa: BLE001 - the context is a bonus; registration must go on
        log.debug("trainmon: run context incomplete: %s", error)
    probe.join(max(0.0, NVML_TIMEOUT - (time.monotonic() - started)))
    context.update(dict(nvml))  # a copy: the probe may still be running
    return _bounded(context)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """{distribution: version} of the installed ones among `names`."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except Exception:  # noqa: BLE001 - not installed (or broken metadata): left out
            continue
    return versions


def git_state(cwd: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{commit, branch?, dirty, diff_sha256?}`` of the repository at `cwd`; {} without git or a repository."""
    deadline = time.monotonic() + GIT_BUDGET
    git_env = {**(os.environ if env is None else env), "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

    def git(*args: str) -> str | None:
        remaining = min(GIT_TIMEOUT, deadline - time.monotonic())
        if remaining <= 0:
            return None
        try:
            result = subprocess.run(["git", *args], cwd=cwd, env=git_env, capture_output=True, text=True,
                                    timeout=remaining, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit:
        return {}
    state: dict[str, Any] = {"commit": commit[:64]}
    branch = git("symbolic-ref", "--short", "-q", "HEAD")
    if branch:
        state["branch"] = branch[:255]
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is not None:
        state["dirty"] = bool(status)
        if status:
            digest = _diff_sha256(cwd, git_env, deadline)
            if digest:
                state["diff_sha256"] = digest
    return state


def _diff_sha256(cwd: str | None, env: Mapping[str, str], deadline: float) -> str | None:
    """SHA-256 of ``git diff HEAD`` (binary diffs included), streamed; None past the deadline or the size cap."""
    command = ["git", "-c", "core.quotepath=off", "diff", "HEAD", "--no-color", "--no-ext-diff", "--binary"]
    try:
        process = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    except (OSError, ValueError):
        return None
    digest, size, complete = hashlib.sha256(), 0, False
    timer = threading.Timer(max(0.0, min(GIT_TIMEOUT, deadline - time.monotonic())), process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        while chunk := process.stdout.read(1 << 16):
            size += len(chunk)
            if size > MAX_DIFF_BYTES:
                process.kill()
                break
            digest.update(chunk)
        else:
            complete = True
    finally:
        timer.cancel()
        if process.stdout is not None:
            process.stdout.close()
        returncode = process.wait()
    return digest.hexdigest() if complete and returncode == 0 else None


def _nvml_into(into: dict[str, Any]) -> None:
    """GPU names and memory, driver and CUDA driver versions from NVML, when ``pynvml`` and a driver are there."""
    try:
        import pynvml  # noqa: PLC0415 - optional (nvidia-ml-py), and only here
    except Exception:  # noqa: BLE001
        return
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return
    try:
        found: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            found["driver_version"] = _text(pynvml.nvmlSystemGetDriverVersion())
        with contextlib.suppress(Exception):
            version = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
            found["cuda_driver_version"] = f"{version // 1000}.{version % 1000 // 10}"
        gpus = []
        with contextlib.suppress(Exception):
            for index in range(min(int(pynvml.nvmlDeviceGetCount()), 64)):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                gpu: dict[str, Any] = {"index": index, "name": _text(pynvml.nvmlDeviceGetName(handle))}
                with contextlib.suppress(Exception):
                    gpu["memory_total_bytes"] = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
                gpus.append(gpu)
        found["gpus"] = gpus
        into.update(found)
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _bounded(context: dict[str, Any]) -> dict[str, Any]:
    """`context` with its largest parts cut until it fits `MAX_CONTEXT_BYTES` as JSON."""
    def size() -> int:
        return len(json.dumps(context, default=str).encode("utf-8", "replace"))

    if size() <= MAX_CONTEXT_BYTES:
        return context
    command = context.get("command")
    if isinstance(command, dict) and command.get("argv"):
        command["argv"] = [arg[:128] for arg in command["argv"][:32]] + ["..."]
        command["truncated"] = True
    for key in ("gpus", "packages", "command"):
        if size() <= MAX_CONTEXT_BYTES:
            break
        context.pop(key, None)
    return context
