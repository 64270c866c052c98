"""trainmon.client: the metadata-API client a monitor composes.

Run registration and lifecycle (`recorder`), one typed record per operation (`records`), one delivery policy
(`delivery`), background shipping with a disk spool (`shipper`, `spool`), `trainmon sync` (`sync`), the
public run methods (`methods`), compare (`compare`) and the `trainmon` command (`cli`).
"""
