"""trainmon.common: the contract the exporter, the client and the metadata API share.

Standard library only (an import-linter contract keeps it so): metric key normalisation (`naming`), the wire
format of points and non-finite values (`wire`), run statuses and log levels (`statuses`), file names and atomic
file writes (`files`), and the one resolver of ``TRAINMON_*`` settings (`settings`).
"""
