from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    verbose_name = "Workspaces and deliveries"

    def ready(self) -> None:
        from workspaces import receivers  # noqa: F401 - a member who leaves loses the organization's data
