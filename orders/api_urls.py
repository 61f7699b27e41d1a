from django.urls import path

from orders import api

urlpatterns = [
    path("quotes/", api.QuoteApi.as_view(), name="api-quote"),
    path("cart/", api.CartApi.as_view(), name="api-cart"),
    path("orders/", api.OrderListCreateApi.as_view(), name="api-order-list"),
    path("orders/<int:order_id>/", api.OrderDetailApi.as_view(), name="api-order-detail"),
]
