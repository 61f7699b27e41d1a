"""manage.py search_reindex: rebuild the Elasticsearch / OpenSearch study index without
downtime (a new suffixed index, then the alias ELASTICSEARCH_INDEX swapped to it in one
atomic update; the worker's writes during the build go to both)."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Build a new search index of every live study and swap the alias ELASTICSEARCH_INDEX to it."

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        if not settings.ELASTICSEARCH_URL:
            raise CommandError("ELASTICSEARCH_URL is not set: there is no search index to rebuild.")
        from catalog.search.elastic import reindex_all

        name, total = reindex_all()
        self.stdout.write(f"{settings.ELASTICSEARCH_INDEX} -> {name}: {total} studies indexed")
