from django.urls import path

from workspaces import views

urlpatterns = [
    path("workspace/", views.workspace, name="workspace"),
    path("workspace/deliveries/<int:delivery_id>/", views.delivery_files, name="delivery_files"),
    path("workspace/deliveries/<int:delivery_id>/progress/", views.delivery_progress, name="delivery_progress"),
    path("workspace/deliveries/<int:delivery_id>/files/<int:file_id>/image.png", views.delivery_file_image,
         name="delivery_file_image"),
    path("workspace/download/<str:token>/", views.download, name="workspace_download"),
]
