"""Rules that span repositories (lifecycle; retention)."""
