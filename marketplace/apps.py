from django.apps import AppConfig
from django.db.models.signals import post_migrate


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Accounts, organizations and audit"

    def ready(self) -> None:
        from marketplace.database import grant_after_migrate

        # After every migrate (tables may be new): the app role's row access, nothing more.
        post_migrate.connect(grant_after_migrate, sender=self, dispatch_uid="marketplace.app_role_grant")

        from marketplace import receivers  # noqa: F401 - connects the login audit
        from marketplace.admin import audit_every_admin

        audit_every_admin()  # other packages' admins audit their deletions too
