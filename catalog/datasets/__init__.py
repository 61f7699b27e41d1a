"""Datasets: the catalogue and dataset pages, the provider's dataset management, pricing,
grants, previews and the statistics derived from a dataset's rows."""
