"""Orders API: quote, place (accepting the agreement), list and read one's own orders.
Quotes and orders below the disclosure threshold are refused (catalog/disclosure.py)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.search.criteria import COHORT_KEYS
from catalog.selectors import access_dataset
from marketplace.exceptions import ApplicationError
from marketplace.guards import require_verified_email
from marketplace.services import client_ip
from orders.selectors import access_order, active_dua_template, orders_for_buyer
from orders.services import order_place, quote_for_buyer


class CriteriaField(serializers.DictField):
    """A cohort's definition: {"q": "brain", "sex": ["F"], "price_max": "10"}; checked by
    the same parser as the search (catalog/search/criteria.py)."""

    child = serializers.JSONField()


class QuoteOutput(serializers.Serializer):
    dataset_id = serializers.IntegerField()
    criteria = CriteriaField()
    criteria_words = serializers.ListField(child=serializers.DictField(), help_text="Every criterion in words")
    study_count = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2, source="unit_price.amount")
    total = serializers.DecimalField(max_digits=12, decimal_places=2, source="total.amount")
    currency = serializers.CharField(source="total.currency")


class OrderOutput(serializers.Serializer):
    id = serializers.IntegerField()
    dataset_id = serializers.IntegerField()
    criteria = CriteriaField()
    study_count = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2)
    total = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    payment_method = serializers.CharField()
    status = serializers.CharField()
    contract_status = serializers.CharField(source="contract.status")
    dua_version = serializers.CharField(source="contract.template_version")
    created = serializers.DateTimeField()


class QuoteApi(APIView):
    permission_classes = [IsAuthenticated]

    class Input(serializers.Serializer):
        class Meta:
            ref_name = "QuoteInput"

        dataset_id = serializers.IntegerField()
        criteria = CriteriaField(required=False, default=dict,
                                 help_text=f"The cohort: {', '.join(COHORT_KEYS)} (as in /api/cohorts/)")

    @extend_schema(request=Input, responses=QuoteOutput)
    def post(self, request: Request) -> Response:
        data = self._input(request)
        dataset = access_dataset(user=request.user, dataset_id=data["dataset_id"])
        quote = quote_for_buyer(user=request.user, dataset=dataset, criteria=data["criteria"],
                                ip=client_ip(request))
        return Response(QuoteOutput(quote).data)

    def _input(self, request: Request) -> dict:
        serializer = self.Input(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class OrderListCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    class Input(QuoteApi.Input):
        class Meta:
            ref_name = "OrderInput"

        accept_agreement = serializers.BooleanField(help_text="You accept the active data use agreement")
        expected_total = serializers.DecimalField(max_digits=12, decimal_places=2, required=False)

    @extend_schema(responses=OrderOutput(many=True))
    def get(self, request: Request) -> Response:
        return Response(OrderOutput(orders_for_buyer(user=request.user), many=True).data)

    @extend_schema(request=Input, responses={201: OrderOutput})
    def post(self, request: Request) -> Response:
        serializer = self.Input(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        require_verified_email(user=request.user)
        dataset = access_dataset(user=request.user, dataset_id=data["dataset_id"])
        dua = active_dua_template()
        if dua is None:
            raise ApplicationError("No data use agreement is configured.", code="no_agreement")
        order = order_place(buyer=request.user, dataset=dataset, criteria=data["criteria"],
                            accept_agreement=data["accept_agreement"], dua_template=dua,
                            expected_total=data.get("expected_total"), ip=client_ip(request))
        return Response(OrderOutput(order).data, status=status.HTTP_201_CREATED)


class OrderDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=OrderOutput)
    def get(self, request: Request, order_id: int) -> Response:
        return Response(OrderOutput(access_order(user=request.user, order_id=order_id)).data)
