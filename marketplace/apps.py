from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Accounts, organizations and audit"

    def ready(self) -> None:
        from marketplace import receivers  # noqa: F401 - connects the login audit
