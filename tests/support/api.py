"""The metadata API as a real server for tests: `python -m trainmon.metadata_api` (or `trainmon serve`) on
127.0.0.1 and a free port, in a temp dir, ready once /readyz answers 200 (the database answers and is migrated).

The helpers live in devtools/procs.py (shared with the demo and the bench scripts); the tests import them from here.
"""

from devtools.procs import API_COMMAND, api_environment, run_api, start_api

__all__ = ["API_COMMAND", "api_environment", "run_api", "start_api"]
