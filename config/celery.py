"""Celery application bootstrap; all configuration comes from Django settings (CELERY_*)."""
from __future__ import annotations

import os
from fnmatch import fnmatchcase
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("marketplace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def queue_of(task_name: str, routes: dict[str, dict[str, Any]], default: str) -> str:
    """The queue CELERY_TASK_ROUTES sends a task to: exact names first, then patterns in order."""
    if task_name in routes:
        return routes[task_name]["queue"]
    for pattern, route in routes.items():
        if fnmatchcase(task_name, pattern):
            return route["queue"]
    return default


class QueueTimeLimits:
    """Task annotation: every task gets the soft/hard limits of the queue it is routed to
    (settings.CELERY_QUEUE_TIME_LIMITS). Annotations win over decorator arguments, so a task
    that needs other limits belongs on another queue."""

    def annotate(self, task: Any) -> dict[str, int] | None:
        from django.conf import settings

        queue = queue_of(task.name, settings.CELERY_TASK_ROUTES, settings.CELERY_TASK_DEFAULT_QUEUE)
        limits = settings.CELERY_QUEUE_TIME_LIMITS.get(queue)
        if limits is None:
            return None
        return {"soft_time_limit": limits[0], "time_limit": limits[1]}


app.conf.task_annotations = [QueueTimeLimits()]
