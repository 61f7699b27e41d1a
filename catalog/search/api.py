"""Study-level search and cohorts over the API: /api/studies/ and /api/cohorts/."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.facets import openapi_query_parameters
from catalog.search import search_backend
from catalog.search.queries import count_query_admit, study_browse_record
from catalog.search.query import STUDIES, query_from
from catalog.search.service import (
    browsable_studies,
    cohort_summary,
    facets_and_total,
    study_matches,
    study_page,
)
from marketplace.services import client_ip


def _count() -> serializers.JSONField:
    return serializers.JSONField(help_text='A number, or "suppressed" where the disclosure rule hides it')


class StudyFacetRow(serializers.Serializer):
    """One class for every facet row in the schema (two of the same name would clash)."""

    value = serializers.CharField()
    label = serializers.CharField()
    count = _count()
    selected = serializers.BooleanField()


def _facet_rows() -> serializers.DictField:
    return serializers.DictField(child=serializers.ListField(child=StudyFacetRow()))


# Exactly what the parser accepts here (every facet of the vocabulary).
QUERY_PARAMETERS = openapi_query_parameters(list(STUDIES.facets), extra=list(STUDIES.params))


class StudyOutput(serializers.Serializer):
    id = serializers.IntegerField()
    dataset_id = serializers.IntegerField()
    patient_sex = serializers.CharField()
    age_band = serializers.CharField()
    modalities = serializers.ListField(child=serializers.CharField())
    body_part = serializers.CharField()
    manufacturer = serializers.CharField()
    model = serializers.CharField()
    ethnicity = serializers.CharField()
    study_year = serializers.IntegerField(allow_null=True)
    slice_thickness = serializers.FloatField(allow_null=True)
    field_strength = serializers.FloatField(allow_null=True)
    has_report = serializers.BooleanField()
    has_annotation = serializers.BooleanField()
    series_count = serializers.IntegerField()
    instance_count = serializers.IntegerField()
    description = serializers.CharField()


class StudyListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="studies_search", parameters=QUERY_PARAMETERS,
        responses=inline_serializer("StudySearchResult", fields={
            "count": _count(), "page": serializers.IntegerField(),
            "browsable_count": serializers.IntegerField(),
            "results": StudyOutput(many=True),
            "facets": _facet_rows(),
        }),
    )
    def get(self, request: Request) -> Response:
        query = query_from(request.query_params, scope=STUDIES)
        page = study_page(request.query_params.get("page"))
        count_query_admit(user=request.user, ip=client_ip(request), query=query, where="api.studies")
        backend = search_backend()
        matches = study_matches(query, backend)
        summary = facets_and_total(query=query, user=request.user, backend=backend, matches=matches)
        rows, browsable_count = browsable_studies(query=query, user=request.user, page=page,
                                                  backend=backend, matches=matches)
        study_browse_record(user=request.user, ip=client_ip(request), rows=rows, page=page, where="api.studies")
        return Response({"count": summary["total"], "page": page, "browsable_count": browsable_count,
                         "results": StudyOutput(rows, many=True).data, "facets": summary["facets"]})


class CohortApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="cohorts_count", parameters=QUERY_PARAMETERS,
        responses=inline_serializer("CohortSummary", fields={
            "criteria": serializers.DictField(),
            "threshold": serializers.IntegerField(help_text="Counts below this are hidden from you"),
            "exact": serializers.BooleanField(help_text="True where you are entitled to every dataset counted"),
            "datasets": serializers.ListField(child=serializers.DictField()),
            "total_studies": _count(), "total_patients": _count(),
            "total_price": serializers.ListField(child=serializers.DictField()),
            "price_excludes_small_datasets": serializers.BooleanField(),
            "mix": _facet_rows(),
            "fill_the_gap": serializers.ListField(child=serializers.DictField()),
        }),
    )
    def get(self, request: Request) -> Response:
        query = query_from(request.query_params, scope=STUDIES)
        count_query_admit(user=request.user, ip=client_ip(request), query=query, where="api.cohorts")
        return Response(cohort_summary(query=query, user=request.user))
