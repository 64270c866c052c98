"""Database access, one module per aggregate; functions take a Session and never commit (the request does)."""
