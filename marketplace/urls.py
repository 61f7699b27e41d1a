from allauth.account import views as account_views
from django.urls import path
from django.views.generic import RedirectView

from marketplace import views

urlpatterns = [
    # The old addresses stay: log in and out are allauth's views, sign-up moved.
    path("signup/", RedirectView.as_view(pattern_name="account_signup", query_string=True), name="signup"),
    path("login/", account_views.login, name="login"),
    path("logout/", account_views.logout, name="logout"),
    path("account/", views.account_settings, name="account_settings"),
    path("account/time-zone/", views.account_time_zone, name="account_time_zone"),
    path("account/tokens/", views.api_token_new, name="api_token_new"),
    path("account/tokens/<int:token_id>/revoke/", views.api_token_revoke_view, name="api_token_revoke"),
    path("organization/", views.organization_members, name="organization_members"),
    path("organization/new/", views.organization_new, name="organization_new"),
    path("organization/<int:organization_id>/details/", views.organization_details, name="organization_details"),
    path("organization/<int:organization_id>/webhooks/", views.organization_webhooks, name="organization_webhooks"),
    path("organization/<int:organization_id>/webhooks/<int:endpoint_id>/<str:action>/",
         views.organization_webhook_action, name="organization_webhook_action"),
    path("organization/invitations/<int:invitation_id>/<str:answer>/", views.invitation_answer,
         name="invitation_answer"),
    path("notifications/", views.notification_list, name="notifications"),
]
