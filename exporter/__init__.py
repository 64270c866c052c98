"""trainmon.exporter: the in-process exporter that trainers import."""
