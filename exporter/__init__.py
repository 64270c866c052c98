"""trainmon.exporter: the in-process exporter that trainers import.

    from trainmon.exporter import TrainingMonitor
"""

from .monitor import TrainingMonitor, trainmon_version
from .naming import normalize_key

__all__ = ["TrainingMonitor", "normalize_key", "trainmon_version"]
