"""The home-made in-memory search engine, fenced as one unit: per-dataset column snapshots
(snapshots.py), keyword postings (keywords.py) and the numpy counting over them
(columnar.py, ColumnarSearch, the default backend). Outside this package only
catalog/search/__init__.py (choosing the backend) and catalog/ingestion/after.py and
catalog/search/vectors.py (refreshing snapshots and postings) reach in; replacing or
deleting the engine means this folder and those three call sites."""
