"""Orders API: quote a dataset's cohort, fill the cart, check out (accepting and signing
the agreement), list and read one's own orders. Quotes and orders below the disclosure
threshold are refused (catalog/disclosure.py). Money is integer minor units plus currency."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.datasets.selectors import access_dataset
from catalog.exceptions import InvalidQueryError
from catalog.facets import echo_name, openapi_criteria_schema
from catalog.search.criteria import COHORT_KEYS
from marketplace.exceptions import ApplicationError
from marketplace.guards import require_verified_email
from marketplace.input_guard import MAX_MINOR_AMOUNT
from marketplace.services import client_ip
from marketplace.vetting import BuyerNotVerifiedError, ordering_refusal
from orders.cart import cart_add, cart_quote, cart_remove
from orders.checkout import checkout
from orders.models import Order
from orders.quotes import quote_for_buyer
from orders.selectors import access_order, active_dua_template, orders_for_buyer
from orders.signatures import signature_manifest


@extend_schema_field(openapi_criteria_schema(COHORT_KEYS))
class CriteriaField(serializers.DictField):
    """A cohort's definition: {"q": "brain", "sex": ["F"], "price_max": "10"}. Its schema is
    generated from the facet vocabulary (catalog/facets.py) and lists exactly the keys
    accepted: a key outside it is refused here, values are checked by the one parser
    (catalog/search/query.py, through criteria.py)."""

    child = serializers.JSONField()

    def to_internal_value(self, data):  # noqa: ANN001, ANN201
        value = super().to_internal_value(data)
        unknown = sorted(echo_name(str(k)) for k in value if k not in COHORT_KEYS)
        if unknown:
            # The search's own error (code invalid_search), as for a bad value.
            raise InvalidQueryError(f"Unknown filter: {', '.join(unknown[:5])} in criteria. "
                                    f"Known filters: {', '.join(COHORT_KEYS)}.")
        return value


class PriceLineOutput(serializers.Serializer):
    label = serializers.CharField()
    amount_minor = serializers.IntegerField()


class QuoteOutput(serializers.Serializer):
    dataset_id = serializers.IntegerField(source="dataset.pk")
    criteria = CriteriaField()
    criteria_words = serializers.ListField(child=serializers.DictField(), help_text="Every criterion in words")
    study_count = serializers.IntegerField()
    image_count = serializers.IntegerField()
    held_excluded = serializers.IntegerField(help_text="Studies left out: your organization holds them already")
    pricing_model = serializers.CharField(source="price.model")
    breakdown = PriceLineOutput(source="price.lines", many=True)
    total_minor = serializers.IntegerField()
    currency = serializers.CharField()


class CartOutput(serializers.Serializer):
    lines = QuoteOutput(many=True)
    problems = serializers.SerializerMethodField()
    currency = serializers.CharField(allow_null=True)
    total_minor = serializers.SerializerMethodField()

    def get_problems(self, quote) -> list[dict]:  # noqa: ANN001
        return [{"dataset_id": p.dataset_id, "title": p.title, "message": p.message, "all_held": p.all_held}
                for p in quote.problems]

    def get_total_minor(self, quote) -> int | None:  # noqa: ANN001
        return None if quote.mixed_currencies else quote.total_minor


class OrderLineOutput(serializers.Serializer):
    id = serializers.IntegerField()
    consent_status = serializers.CharField(help_text="The provider's consent: not_required, pending, approved "
                                                     "or declined")
    dataset_id = serializers.IntegerField()
    provider = serializers.CharField(source="provider.name")
    criteria = CriteriaField()
    study_count = serializers.IntegerField()
    pricing_model = serializers.CharField()
    price_snapshot = serializers.JSONField()
    amount_minor = serializers.IntegerField()
    refunded_minor = serializers.IntegerField()
    licence_terms = serializers.JSONField(help_text="The dataset's licence terms when the order was placed")
    licence_ends = serializers.DateTimeField(allow_null=True)
    access_ended_at = serializers.DateTimeField(allow_null=True)


class OrderOutput(serializers.Serializer):
    id = serializers.IntegerField()
    lines = OrderLineOutput(many=True)
    total_minor = serializers.IntegerField()
    currency = serializers.CharField()
    payment_method = serializers.CharField()
    status = serializers.CharField()
    payment_status = serializers.CharField()
    fulfilment_status = serializers.CharField()
    contract_status = serializers.CharField(source="contract.status")
    intended_use = serializers.CharField()
    use_category = serializers.CharField()
    delivery_format = serializers.CharField()
    dua_version = serializers.CharField(source="contract.template_version")
    agreement_sha256 = serializers.CharField(source="contract.text_sha256",
                                             help_text="SHA-256 of the agreement text signed")
    invoice_number = serializers.SerializerMethodField()
    signatures = serializers.SerializerMethodField(help_text="The contract's electronic signatures; "
                                                   "matches: the contract still hashes to what was signed")
    created = serializers.DateTimeField()

    def get_signatures(self, order: Order) -> list[dict]:
        return [{"printed_name": row["signature"].printed_name, "meaning": row["signature"].meaning,
                 "signed_at": row["signature"].signed_at.isoformat(), "record_sha256": row["signature"].record_sha256,
                 "matches": row["matches"]} for row in signature_manifest(order.contract)]

    def get_invoice_number(self, order: Order) -> str | None:
        invoice = getattr(order, "invoice", None)
        return invoice.number if invoice else None


class QuoteInput(serializers.Serializer):
    dataset_id = serializers.IntegerField()
    criteria = CriteriaField(required=False, default=dict)


class QuoteApi(APIView):
    permission_classes = [IsAuthenticated]
    token_scopes = {"POST": "read"}  # a quote changes nothing

    @extend_schema(request=QuoteInput, responses=QuoteOutput)
    def post(self, request: Request) -> Response:
        serializer = QuoteInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        dataset = access_dataset(user=request.user, dataset_id=data["dataset_id"])
        quote = quote_for_buyer(user=request.user, dataset=dataset, criteria=data["criteria"], ip=client_ip(request))
        return Response(QuoteOutput(quote).data)


class CartApi(APIView):
    """GET the cart priced now; POST {dataset_id, criteria} puts a cohort of one dataset in
    it (replacing that dataset's line); DELETE ?dataset_id= removes it."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=CartOutput)
    def get(self, request: Request) -> Response:
        return Response(CartOutput(cart_quote(buyer=request.user)).data)

    @extend_schema(request=QuoteInput, responses={201: CartOutput})
    def post(self, request: Request) -> Response:
        serializer = QuoteInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        dataset = access_dataset(user=request.user, dataset_id=data["dataset_id"])
        cart_add(buyer=request.user, dataset=dataset, criteria=data["criteria"], ip=client_ip(request))
        return Response(CartOutput(cart_quote(buyer=request.user)).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=CartOutput)
    def delete(self, request: Request) -> Response:
        dataset_id = request.query_params.get("dataset_id", "")
        if not dataset_id.isdigit():
            raise ApplicationError("Give the dataset_id of the line to remove.", code="dataset_id")
        cart_remove(buyer=request.user, dataset_id=int(dataset_id))
        return Response(CartOutput(cart_quote(buyer=request.user)).data)


class CheckoutInput(serializers.Serializer):
    accept_agreement = serializers.BooleanField(help_text="You accept the active data use agreement")
    payment_method = serializers.ChoiceField(choices=Order.PaymentMethod.choices)
    expected_total_minor = serializers.IntegerField(min_value=0, max_value=MAX_MINOR_AMOUNT,
                                                    help_text="The cart total you saw (GET /api/cart/), in cents")
    expected_currency = serializers.CharField(max_length=3)
    po_number = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    password = serializers.CharField(max_length=4096, write_only=True, trim_whitespace=False,
                                     style={"input_type": "password"},
                                     help_text="Your password, typed again: it signs the agreement")
    totp_code = serializers.CharField(max_length=16, required=False, allow_blank=True, default="", write_only=True,
                                      help_text="The current code of your authenticator app, when you have one")
    # Lengths are checked by the checkout (orders/intended_use.py), with one message for
    # the page and the API.
    intended_use = serializers.CharField(max_length=4000, allow_blank=True, trim_whitespace=False,
                                         help_text="What the data is for, 20 to 2000 characters: the providers "
                                                   "asked to consent and the administrator read it")
    use_category = serializers.ChoiceField(choices=Order.UseCategory.choices)
    delivery_format = serializers.ChoiceField(choices=Order.DeliveryFormat.choices, required=False,
                                              default=Order.DeliveryFormat.DICOM,
                                              help_text="DICOM files, NIfTI converted per series, or both")


class OrderListCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=OrderOutput(many=True))
    def get(self, request: Request) -> Response:
        orders = orders_for_buyer(user=request.user).prefetch_related("lines__provider")
        return Response(OrderOutput(orders, many=True).data)

    @extend_schema(request=CheckoutInput, responses={201: OrderOutput})
    def post(self, request: Request) -> Response:
        """Check out the cart: one order with a line per dataset, the agreement signed with
        your password (and TOTP code when your account has TOTP) sent in this request, and
        what the data is for. Refused (403, code buyer_not_verified or country_blocked)
        unless you belong to a verified buyer organization outside the blocked countries."""
        refusal = ordering_refusal(user=request.user)
        if refusal is not None and refusal.code == "buyer_not_verified":
            # Said before any field is checked; a blocked country is refused (and audited) by checkout.
            raise BuyerNotVerifiedError(refusal.message)
        serializer = CheckoutInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        require_verified_email(user=request.user)
        dua = active_dua_template()
        if dua is None:
            raise ApplicationError("No data use agreement is configured.", code="no_agreement")
        order = checkout(buyer=request.user, payment_method=data["payment_method"],
                         accept_agreement=data["accept_agreement"], dua_template=dua,
                         expected_total_minor=data["expected_total_minor"],
                         expected_currency=data["expected_currency"].upper(), po_number=data["po_number"],
                         password=data["password"], totp_code=data["totp_code"], ip=client_ip(request),
                         intended_use=data["intended_use"], use_category=data["use_category"],
                         delivery_format=data["delivery_format"])
        return Response(OrderOutput(order).data, status=status.HTTP_201_CREATED)


class OrderDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=OrderOutput)
    def get(self, request: Request, order_id: int) -> Response:
        return Response(OrderOutput(access_order(user=request.user, order_id=order_id)).data)
