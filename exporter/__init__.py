"""trainmon.exporter: the in-process exporter that trainers import.

    from trainmon.exporter import TrainingMonitor
"""

from trainmon.common.naming import normalize_key

from .monitor import TrainingMonitor, trainmon_version

__all__ = ["TrainingMonitor", "normalize_key", "trainmon_version"]
