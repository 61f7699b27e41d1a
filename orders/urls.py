from django.urls import path

from orders import views

urlpatterns = [
    path("datasets/<int:dataset_id>/order/", views.order_new, name="order_new"),
    path("datasets/<int:dataset_id>/sample/", views.sample, name="dataset_sample"),
    path("cart/", views.cart, name="cart"),
    path("cart/add-cohort/", views.cart_add_whole_cohort, name="cart_add_cohort"),
    path("cart/checkout/", views.cart_checkout, name="cart_checkout"),
    path("orders/", views.order_list, name="order_list"),
    path("provider/", views.provider_dashboard, name="provider_dashboard"),
    path("provider/consent/", views.consent_queue, name="consent_queue"),
    path("provider/consent/<int:line_id>/", views.consent_line, name="consent_line"),
    path("orders/<int:order_id>/", views.order_detail, name="order_detail"),
    path("orders/<int:order_id>/pay/", views.order_pay, name="order_pay"),
    path("orders/<int:order_id>/lines/<int:line_id>/renew/", views.line_renew, name="line_renew"),
    path("orders/<int:order_id>/status/", views.order_status, name="order_status"),
    path("orders/<int:order_id>/invoice.pdf", views.invoice_download, name="invoice_download"),
    path("orders/<int:order_id>/agreement/", views.order_agreement, name="order_agreement"),
    path("orders/<int:order_id>/agreement.pdf", views.order_agreement_pdf, name="order_agreement_pdf"),
    path("payments/stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
    path("datasets/<int:dataset_id>/negotiate/", views.negotiation_new, name="negotiation_new"),
    path("negotiations/", views.negotiation_list, name="negotiation_list"),
    path("negotiations/<int:negotiation_id>/", views.negotiation_detail, name="negotiation_detail"),
    path("offers/<int:offer_id>/act/", views.offer_act, name="offer_act"),
    path("provider/negotiations/", views.provider_negotiations, name="provider_negotiations"),
    path("requests/<int:request_id>/answers/<int:response_id>/offer/", views.negotiation_from_board,
         name="negotiation_from_board"),
]
