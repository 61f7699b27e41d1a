"""Create demo users, organizations and four published datasets of synthetic DICOM.

The DICOM goes through the real path: zip upload into quarantine, de-identification with
verification, catalogue rows, admin publication. Safe to run twice (existing demo data is
kept). Logins are printed and written to VAR_DIR/demo_logins.txt.

Demo accounts have verified e-mail addresses and accepted terms. Those whose role needs a
second factor (admin, the provider owners) get a TOTP authenticator and recovery codes;
their secrets and codes go into demo_logins.txt (local demo data only), and
`manage.py demo_totp_code USER` prints the current code.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.datasets.services import dataset_create, dataset_publish, dataset_submit_for_review
from catalog.ingestion.ingest import upload_batch_ingest
from catalog.ingestion.uploads import upload_batch_create
from catalog.models import Dataset
from demo.accounts import demo_account_ready, demo_two_factor
from demo.synthetic import DEMO_SPECS, generate_demo_dataset, write_zip
from marketplace.models import Membership, Organization, User
from marketplace.services import organization_approve
from marketplace.vetting import organization_buyer_verify

PASSWORD = os.environ.get("DEMO_PASSWORD", "demo-pass-2026")

PROVIDERS = [
    ("provider1", "provider1@northbridge.example", "Northbridge Radiology", "US"),
    ("provider2", "provider2@lakeside.example", "Lakeside Imaging Network", "DE"),
]
# Region, conditions and browsing for the demo datasets (same order as DEMO_SPECS, which
# hold each one's licence and pricing plan).
DEMO_SEARCH_ATTRIBUTES = [
    {"country": "NZ", "allow_study_browsing": True,
     "conditions": ["ICD10:R91.1|Solitary pulmonary nodule", "ICD10:C34.9|Lung cancer"]},
    {"country": "DE", "allow_study_browsing": True,
     "conditions": ["ICD10:S83.2|Meniscus tear", "ICD10:G43.9|Migraine"]},
    {"country": "US", "allow_study_browsing": False,
     "conditions": ["ICD10:J18.9|Pneumonia"]},
    {"country": "JP", "allow_study_browsing": False,
     "conditions": ["ICD10:K80.2|Gallstones"]},
]
# Which provider publishes which demo dataset (index into DEMO_SPECS).
DATASET_OWNER = {0: 0, 1: 0, 2: 1, 3: 1}


class Command(BaseCommand):
    help = "Create demo users and four published datasets of synthetic DICOM (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        admin = self._user("admin", "admin@marketplace.example", staff=True)
        providers = [self._provider(*row, admin=admin) for row in PROVIDERS]
        researcher = self._user("researcher", "researcher@acme-ai.example")
        acme = self._org(researcher, "Acme AI Research", Organization.Kind.BUYER, "GB")
        Organization.objects.filter(pk=acme.pk, sector="").update(
            sector=Organization.Sector.COMMERCIAL, contact_name="Acme Research Office",
            contact_email="research-office@acme-ai.example")
        organization_buyer_verify(organization=acme, acting_user=admin)  # the demo buyer may check out

        for index, spec in enumerate(DEMO_SPECS):
            org, owner = providers[DATASET_OWNER.get(index, 0)]
            self._dataset(spec, index, org, owner, admin)

        lines = [
            f"Demo logins (password for all: {PASSWORD}; log in with the username or the e-mail)",
            "  admin       — Django admin at /admin/ (approve providers, publish datasets, approve contracts)",
            "  provider1   — Northbridge Radiology (provider)",
            "  provider2   — Lakeside Imaging Network (provider)",
            "  researcher  — Acme AI Research (buyer)",
            "",
            "admin, provider1 and provider2 need a second factor after the password. Either",
            "  - run `.venv/bin/python manage.py demo_totp_code USER` and type the 6 digits it prints, or",
            "  - add the secret below to an authenticator app (or open the otpauth link), or",
            "  - type one of the recovery codes (each works once).",
        ]
        for user in (admin, *(owner for _, owner in providers)):
            secret, uri, codes = demo_two_factor(user)
            lines += ["", f"  {user.username}: TOTP secret {secret}", f"    {uri}",
                      f"    recovery codes: {' '.join(codes)}"]
        logins = "\n".join(lines) + "\n"
        Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
        (Path(settings.VAR_DIR) / "demo_logins.txt").write_text(logins)
        self.stdout.write(logins)

    def _user(self, username: str, email: str, *, staff: bool = False) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            if staff:
                user = User.objects.create_superuser(username=username, email=email, password=PASSWORD)
            else:
                user = User.objects.create_user(username=username, email=email, password=PASSWORD)
        return demo_account_ready(user)

    def _org(self, user: User, name: str, kind: str, country: str) -> Organization:
        org, _ = Organization.objects.get_or_create(name=name, defaults={"kind": kind, "country": country})
        Membership.objects.get_or_create(user=user, organization=org, defaults={"role": Membership.Role.OWNER})
        return org

    def _provider(self, username: str, email: str, name: str, country: str, *, admin: User) -> tuple[Organization, User]:
        user = self._user(username, email)
        org = self._org(user, name, Organization.Kind.PROVIDER, country)
        organization_approve(organization=org, acting_user=admin)
        return org, user

    def _dataset(self, spec: dict, index: int, org: Organization, owner: User, admin: User) -> None:
        if Dataset.objects.filter(provider=org, title=spec["title"]).exists():
            self.stdout.write(f"  exists: {spec['title']}")
            return
        with transaction.atomic():
            dataset = dataset_create(
                provider=org, acting_user=owner, title=spec["title"], description=spec["description"],
                licence_type=spec["licence_type"], licence_text=spec["licence_text"],
                licence_terms=spec["licence_terms"], **spec["plan"],
                **DEMO_SEARCH_ATTRIBUTES[index % len(DEMO_SEARCH_ATTRIBUTES)],
            )
        archive = io.BytesIO(write_zip(generate_demo_dataset(spec, seed=100 + index)))
        batch = upload_batch_create(dataset=dataset, files=[(f"{spec['slug']}.zip", archive)], acting_user=owner)
        # Ingest in this process through the same service the worker runs, so the demo is
        # ready before the web server starts; the queued task later finds nothing to do.
        batch = upload_batch_ingest(batch_id=batch.pk)
        self.stdout.write(f"  {spec['title']}: {batch.ok_files} images ingested, {batch.failed_files} rejected")
        dataset.refresh_from_db()
        if dataset.instance_count:
            dataset_submit_for_review(dataset=dataset, acting_user=owner)
            dataset_publish(dataset=dataset, acting_user=admin)
