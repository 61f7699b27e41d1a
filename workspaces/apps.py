from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    verbose_name = "Workspaces and deliveries"

    def ready(self) -> None:
        # A member who leaves loses the organization's data; an order released, cancelled or
        # refunded starts, stops or trims its delivery (orders/signals.py).
        from workspaces import receivers  # noqa: F401
