from django.urls import path

from workspaces import api

urlpatterns = [
    path("orders/<int:order_id>/delivery/", api.OrderDeliveryApi.as_view(), name="api-order-delivery"),
    path("orders/<int:order_id>/delivery/files/", api.OrderDeliveryFilesApi.as_view(),
         name="api-order-delivery-files"),
    path("orders/<int:order_id>/delivery/manifest/", api.OrderDeliveryManifestApi.as_view(),
         name="api-order-delivery-manifest"),
    path("orders/<int:order_id>/delivery/download-urls/", api.OrderDeliveryDownloadUrlsApi.as_view(),
         name="api-order-delivery-download-urls"),
    path("orders/<int:order_id>/delivery/download-url/", api.OrderDeliveryDownloadUrlApi.as_view(),
         name="api-order-delivery-download-url"),
]
