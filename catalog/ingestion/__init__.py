"""Ingestion: uploads into quarantine, the batch state machine, the worker that de-identifies
and catalogues, fair shares between providers, and what runs after (after.py)."""
