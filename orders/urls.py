from django.urls import path

from orders import views

urlpatterns = [
    path("datasets/<int:dataset_id>/order/", views.order_new, name="order_new"),
    path("orders/", views.order_list, name="order_list"),
    path("provider/", views.provider_dashboard, name="provider_dashboard"),
    path("orders/<int:order_id>/", views.order_detail, name="order_detail"),
]
