from django.urls import path

from workspaces import views

urlpatterns = [
    path("workspace/", views.workspace, name="workspace"),
    path("workspace/deliveries/<int:delivery_id>/", views.delivery_files, name="delivery_files"),
    path("workspace/deliveries/<int:delivery_id>/archive.zip", views.delivery_archive, name="delivery_archive"),
    path("workspace/deliveries/<int:delivery_id>/progress/", views.delivery_progress, name="delivery_progress"),
    path("workspace/deliveries/<int:delivery_id>/users/", views.delivery_named_users_change,
         name="delivery_named_users"),
    path("workspace/deliveries/<int:delivery_id>/files/<int:file_id>/image.png", views.delivery_file_image,
         name="delivery_file_image"),
    path("workspace/deliveries/<int:delivery_id>/series/<int:series_id>/viewer/", views.delivery_series_viewer,
         name="delivery_series_viewer"),
    path("workspace/deliveries/<int:delivery_id>/series/<int:series_id>/frames/<int:frame>.png",
         views.delivery_series_frame, name="delivery_series_frame"),
    path("workspace/download/<str:token>/", views.download, name="workspace_download"),
    path("provider/datasets/<int:dataset_id>/deid-certificate.json", views.dataset_certificate, {"fmt": "json"},
         name="dataset_certificate_json"),
    path("provider/datasets/<int:dataset_id>/deid-certificate.pdf", views.dataset_certificate, {"fmt": "pdf"},
         name="dataset_certificate_pdf"),
    path("certificates/check/", views.certificate_check_page, name="certificate_check"),
]
