from django.contrib.auth import views as auth_views
from django.urls import path

from marketplace import views

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.sign_up, name="signup"),
    path("login/", auth_views.LoginView.as_view(template_name="marketplace/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organization/", views.organization_members, name="organization_members"),
    path("notifications/", views.notification_list, name="notifications"),
]
