from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalog"

    def ready(self) -> None:
        # deid reads no settings (it runs without Django): hand it the decode time limit.
        from django.conf import settings

        import deid.pixels

        deid.pixels.DECODE_TIMEOUT_SECONDS = float(settings.DEID_DECODE_TIMEOUT_SECONDS)

        from catalog import receivers  # noqa: F401 - grants a new dataset to its provider
