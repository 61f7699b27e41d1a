import sys

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalog"

    def ready(self) -> None:
        # deid reads no settings (it runs without Django): hand it the decode time limit.
        # Through deid.limits, not deid.pixels: importing deid.pixels here would load pydicom
        # and numpy (about 40 MB) into every web worker; deid.pixels takes the value from
        # deid.limits when a task first imports it.
        from django.conf import settings

        import deid.limits

        timeout = float(settings.DEID_DECODE_TIMEOUT_SECONDS)
        deid.limits.DECODE_TIMEOUT_SECONDS = timeout
        pixels = sys.modules.get("deid.pixels")
        if pixels is not None:  # already imported (a shell, a test run): set it there too
            pixels.DECODE_TIMEOUT_SECONDS = timeout

        from catalog import receivers  # noqa: F401 - grants a new dataset, unindexes a deleted one
