"""Deliveries API: an order's delivery, its files and manifest, and short-lived download
URLs for its files. Everything is reached through one of the caller's orders (another
user's order answers 404). Personal access tokens need the ``read`` scope here, and the
``download`` scope for download URLs (marketplace/api_auth.py)."""
from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.models import ApiToken
from workspaces.models import Delivery
from workspaces.selectors import access_order_delivery, delivery_is_downloadable, delivery_manifest
from workspaces.services import MANIFEST_COLUMNS, download_tokens_make

MAX_PATHS_PER_REQUEST = 500
NO_SUCH_ORDER = {404: OpenApiTypes.OBJECT}


class DeliveryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    order_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Delivery.Status.choices)
    total_files = serializers.IntegerField(help_text="Files to copy (known once the copy started)")
    done_files = serializers.IntegerField()
    total_bytes = serializers.IntegerField(help_text="Bytes copied so far")
    percent = serializers.IntegerField()
    downloadable = serializers.BooleanField(help_text="False for a view-only licence: the images are seen in "
                                                      "the browser, the files cannot be downloaded")
    created = serializers.DateTimeField()
    finished = serializers.DateTimeField(allow_null=True)
    certificate_issued = serializers.DateTimeField(allow_null=True)


class DeliveryFileOutput(serializers.Serializer):
    path = serializers.CharField(help_text="Relative to the delivery, with / between folders")
    size_bytes = serializers.IntegerField()
    sha256 = serializers.CharField()


class DeliveryFilePage(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = DeliveryFileOutput(many=True)


class ManifestRowOutput(serializers.Serializer):
    path = serializers.CharField()
    StudyInstanceUID = serializers.CharField(allow_blank=True)
    SeriesInstanceUID = serializers.CharField(allow_blank=True)
    SOPInstanceUID = serializers.CharField(allow_blank=True)
    bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    fingerprint = serializers.CharField(allow_blank=True, required=False,
                                        help_text="The order's fingerprint tag (workspaces/fingerprint.py)")


class DocumentOutput(serializers.Serializer):
    name = serializers.CharField(help_text="manifest.csv, certificate.json or certificate.pdf")
    bytes = serializers.IntegerField()
    sha256 = serializers.CharField()


class ManifestOutput(serializers.Serializer):
    columns = serializers.ListField(child=serializers.CharField())
    files = ManifestRowOutput(many=True)
    documents = DocumentOutput(many=True, help_text="Files beside the data, downloadable by name")


class DownloadUrlsInput(serializers.Serializer):
    paths = serializers.ListField(child=serializers.CharField(max_length=400), min_length=1,
                                  max_length=MAX_PATHS_PER_REQUEST,
                                  help_text="Paths of delivered files (or manifest.csv, certificate.json, "
                                            f"certificate.pdf); at most {MAX_PATHS_PER_REQUEST}")


class DownloadUrlsOutput(serializers.Serializer):
    expires_in = serializers.IntegerField(help_text="Seconds each URL stays valid")
    urls = serializers.DictField(child=serializers.URLField(), help_text="{path: url}")


class DownloadUrlOutput(serializers.Serializer):
    path = serializers.CharField()
    url = serializers.URLField()
    expires_in = serializers.IntegerField()


class FilePagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


def _delivery_output(request: Request, delivery: Delivery) -> dict:
    delivery.downloadable = delivery_is_downloadable(user=request.user, delivery=delivery)
    return DeliveryOutput(delivery).data


def _urls(request: Request, delivery: Delivery, paths: list[str]) -> dict[str, str]:
    tokens = download_tokens_make(user=request.user, delivery=delivery, paths=paths)
    return {path: request.build_absolute_uri(reverse("workspace_download", args=[token]))
            for path, token in tokens.items()}


class OrderDeliveryApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: DeliveryOutput, **NO_SUCH_ORDER})
    def get(self, request: Request, order_id: int) -> Response:
        """The delivery of one of your orders: status and progress."""
        return Response(_delivery_output(request, access_order_delivery(user=request.user, order_id=order_id)))


class OrderDeliveryFilesApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: DeliveryFilePage, **NO_SUCH_ORDER},
                   parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int,
                                                                                description="1 to 1000")])
    def get(self, request: Request, order_id: int) -> Response:
        """The files delivered so far, by path, with their size and SHA-256."""
        delivery = access_order_delivery(user=request.user, order_id=order_id)
        paginator = FilePagination()
        page = paginator.paginate_queryset(delivery.files.only("path", "size_bytes", "sha256"), request, view=self)
        return paginator.get_paginated_response(DeliveryFileOutput(page, many=True).data)


class OrderDeliveryManifestApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: ManifestOutput, 409: OpenApiTypes.OBJECT, **NO_SUCH_ORDER})
    def get(self, request: Request, order_id: int) -> Response:
        """The delivered manifest.csv as JSON (409 until the delivery is finished), with the
        size and SHA-256 of the documents beside the data."""
        delivery = access_order_delivery(user=request.user, order_id=order_id)
        manifest = delivery_manifest(delivery=delivery)
        return Response(ManifestOutput({"columns": MANIFEST_COLUMNS, **manifest}).data)


class OrderDeliveryDownloadUrlsApi(APIView):
    permission_classes = [IsAuthenticated]
    token_scopes = {"POST": ApiToken.Scope.DOWNLOAD}

    @extend_schema(request=DownloadUrlsInput,
                   responses={200: DownloadUrlsOutput, 403: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT,
                              **NO_SUCH_ORDER})
    def post(self, request: Request, order_id: int) -> Response:
        """Short-lived download URLs for a batch of files. Fetch each with the same
        credentials (the token or session); a URL accepts Range requests to resume. 403
        (code view_only) for a view-only licence; 404 names paths not in the delivery."""
        serializer = DownloadUrlsInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        delivery = access_order_delivery(user=request.user, order_id=order_id)
        urls = _urls(request, delivery, serializer.validated_data["paths"])
        return Response(DownloadUrlsOutput({"expires_in": settings.DOWNLOAD_LINK_SECONDS, "urls": urls}).data)


class OrderDeliveryDownloadUrlApi(APIView):
    permission_classes = [IsAuthenticated]
    token_scopes = {"GET": ApiToken.Scope.DOWNLOAD}

    @extend_schema(parameters=[OpenApiParameter("path", str, required=True)],
                   responses={200: DownloadUrlOutput, 403: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT,
                              **NO_SUCH_ORDER})
    def get(self, request: Request, order_id: int) -> Response:
        """A short-lived download URL for one file (as the batch operation, for one path)."""
        path = serializers.CharField(max_length=400).run_validation(request.query_params.get("path", ""))
        delivery = access_order_delivery(user=request.user, order_id=order_id)
        url = _urls(request, delivery, [path])[path]
        return Response(DownloadUrlOutput({"path": path, "url": url,
                                           "expires_in": settings.DOWNLOAD_LINK_SECONDS}).data)
