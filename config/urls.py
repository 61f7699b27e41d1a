from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

# The admin has no login form of its own: it sends people to the site's login, which
# applies the rate limits and asks for the second factor.
admin.site.login = secure_admin_login(admin.site.login)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: the CSP allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("catalog.api_urls")),
    path("api/", include("orders.api_urls")),
    path("api/", include("workspaces.api_urls")),
    path("", include("marketplace.urls")),
    path("", include("catalog.urls")),
    path("", include("orders.urls")),
    path("", include("workspaces.urls")),
]
