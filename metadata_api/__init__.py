"""trainmon.metadata_api"""
