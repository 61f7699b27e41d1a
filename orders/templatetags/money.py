"""`{% load money %}`: the display library under its former name (marketplace/templatetags/display.py)."""
from marketplace.templatetags.display import register  # noqa: F401
