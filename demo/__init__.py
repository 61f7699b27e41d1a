"""Demo tooling: the synthetic DICOM generator (demo/synthetic.py, also the tests' source of
fake studies) and `manage.py seed_demo`, which builds a demo marketplace through the real
services. Nothing in the product imports it."""
