"""Catalog API: dataset search with the same filters and facets as the catalog page."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.datasets.selectors import access_dataset, dataset_facets, dataset_search, dataset_study_breakdown
from catalog.disclosure import SUPPRESSED, dataset_counts
from catalog.facets import openapi_query_parameters
from catalog.models import PricingModel
from catalog.search.query import DATASETS, query_from
from orders.currency import from_minor

COUNT_HELP = ('A number, or "suppressed" where the disclosure rule hides it (fewer than the threshold, '
              'or withheld so that such a count cannot be worked out from the others)')
VOLUME_TIERS = inline_serializer("VolumeTier", many=True, fields={
    "min_studies": serializers.IntegerField(), "discount_bps": serializers.IntegerField(),
    "discount_percent": serializers.CharField()})


class DatasetOutput(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
    provider = serializers.CharField(source="provider.name")
    modalities = serializers.ListField(child=serializers.CharField())
    body_parts = serializers.ListField(child=serializers.CharField())
    sexes = serializers.ListField(child=serializers.CharField())
    age_bands = serializers.ListField(child=serializers.CharField())
    manufacturers = serializers.ListField(child=serializers.CharField())
    patient_count = serializers.SerializerMethodField(help_text=COUNT_HELP)
    study_count = serializers.SerializerMethodField(help_text=COUNT_HELP)
    series_count = serializers.SerializerMethodField(help_text=COUNT_HELP)
    instance_count = serializers.SerializerMethodField(help_text=COUNT_HELP)
    total_bytes = serializers.IntegerField()
    price_per_study = serializers.SerializerMethodField(help_text=(
        "List price of one study, derived from the plan (search sorts by it), as a decimal string; null for a "
        "per-image, flat or subscription plan where the study count is suppressed (it would give the count)"))
    pricing_model = serializers.ChoiceField(choices=PricingModel.choices)
    price = serializers.SerializerMethodField(help_text=(
        "The plan's price as a decimal string in the currency: per study, per image, for the whole dataset "
        "(flat) or per year (subscription)"))
    currency = serializers.CharField()
    sample_study_count = serializers.IntegerField(help_text="Studies any signed-in user may take for free (0: none)")
    academic_discount_percent = serializers.SerializerMethodField(
        help_text="Discount for verified academic organizations, as a decimal string of percent")
    volume_tiers = serializers.SerializerMethodField(help_text=(
        "Per-study and per-image plans: discounts by number of studies ordered, ascending"))
    licence_type = serializers.CharField()
    licence_terms = serializers.SerializerMethodField(help_text=(
        "The structured licence: use (research or commercial), term_months (null: perpetual), seats (null: the "
        "whole buyer organization), derivative_models, publication, territory, access (download or view_only); "
        "redistribution is always false"))
    licence_text = serializers.CharField(help_text="The provider's additional conditions")
    patient_free_text_kept = serializers.ListField(
        child=serializers.CharField(), help_text="Free-text attributes about patients the provider chose to keep (cleaned)")
    status = serializers.CharField()
    published_at = serializers.DateTimeField()

    def _counts(self, obj: Any) -> dict[str, Any]:
        request = self.context.get("request")
        return dataset_counts(dataset=obj, user=getattr(request, "user", None))

    def get_price_per_study(self, obj: Any) -> str | None:
        if obj.pricing_model != PricingModel.PER_STUDY and self._counts(obj)["studies"] == SUPPRESSED:
            return None
        return f"{obj.price_per_study:.2f}"

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_licence_terms(self, obj: Any) -> dict[str, Any]:
        return obj.terms.to_dict()

    def get_price(self, obj: Any) -> str:
        return str(from_minor(obj.price_minor, obj.currency))

    def get_academic_discount_percent(self, obj: Any) -> str:
        return f"{Decimal(obj.academic_discount_bps) / 100:.2f}"

    @extend_schema_field(VOLUME_TIERS)
    def get_volume_tiers(self, obj: Any) -> list[dict[str, Any]]:
        return [{"min_studies": t["min_studies"], "discount_bps": t["discount_bps"],
                 "discount_percent": f"{Decimal(t['discount_bps']) / 100:.2f}"} for t in obj.volume_tiers or []]

    def get_patient_count(self, obj: Any) -> int | str:
        return self._counts(obj)["patients"]

    def get_study_count(self, obj: Any) -> int | str:
        return self._counts(obj)["studies"]

    def get_series_count(self, obj: Any) -> int | str:
        return self._counts(obj)["series"]

    def get_instance_count(self, obj: Any) -> int | str:
        return self._counts(obj)["images"]


FACET_ROW = inline_serializer("FacetRow", fields={
    "value": serializers.CharField(), "label": serializers.CharField(), "count": serializers.IntegerField(),
    "selected": serializers.BooleanField()})

# Exactly what the parser accepts here (the vocabulary's dataset-catalog facets).
FILTER_PARAMETERS = openapi_query_parameters(list(DATASETS.facets), extra=list(DATASETS.params))


class DatasetListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="datasets_search",
        parameters=FILTER_PARAMETERS,
        responses=inline_serializer("DatasetSearchResult", fields={
            "count": serializers.IntegerField(), "next": serializers.CharField(allow_null=True),
            "previous": serializers.CharField(allow_null=True), "results": DatasetOutput(many=True),
            "facets": serializers.DictField(child=serializers.ListField(child=FACET_ROW)),
        }),
    )
    def get(self, request: Request) -> Response:
        params = query_from(request.query_params, scope=DATASETS)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(dataset_search(params=params), request, view=self)
        response = paginator.get_paginated_response(
            DatasetOutput(page, many=True, context={"request": request}).data)
        response.data["facets"] = dataset_facets(params=params)
        return response


class DatasetDetailApi(APIView):
    permission_classes = [AllowAny]

    class Output(DatasetOutput):
        breakdown = serializers.SerializerMethodField()

        def get_breakdown(self, obj) -> list[dict]:  # noqa: ANN001
            request = self.context.get("request")
            return dataset_study_breakdown(dataset=obj, user=getattr(request, "user", None))

    @extend_schema(responses=Output)
    def get(self, request: Request, dataset_id: int) -> Response:
        dataset = access_dataset(user=request.user, dataset_id=dataset_id)
        return Response(self.Output(dataset, context={"request": request}).data)
