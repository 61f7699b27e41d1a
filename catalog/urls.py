from django.urls import path

from catalog.datasets import views as dataset_views
from catalog.discovery import cohort_views
from catalog.discovery import views as discovery_views
from catalog.ingestion import views as ingestion_views

urlpatterns = [
    path("", dataset_views.home, name="home"),
    path("datasets/", dataset_views.dataset_list, name="dataset_list"),
    path("datasets/<int:dataset_id>/", dataset_views.dataset_detail, name="dataset_detail"),
    path("datasets/<int:dataset_id>/previews/<int:preview_id>.png", dataset_views.dataset_preview_image,
         name="dataset_preview_image"),
    path("datasets/<int:dataset_id>/previews/<int:preview_id>/viewer/", dataset_views.dataset_preview_viewer,
         name="dataset_preview_viewer"),
    path("datasets/<int:dataset_id>/previews/<int:preview_id>/frames/<int:frame>.png", dataset_views.dataset_preview_frame,
         name="dataset_preview_frame"),
    path("cohorts/", cohort_views.cohort_builder, name="cohort_builder"),
    path("saved/", discovery_views.saved_searches, name="saved_searches"),
    path("saved/new/", discovery_views.saved_search_new, name="saved_search_new"),
    path("saved/<int:saved_id>/delete/", discovery_views.saved_search_remove, name="saved_search_remove"),
    path("requests/", discovery_views.data_requests, name="data_requests"),
    path("requests/<int:request_id>/", discovery_views.data_request_detail, name="data_request_detail"),
    path("provider/datasets/new/", dataset_views.dataset_new, name="dataset_new"),
    path("provider/datasets/<int:dataset_id>/", dataset_views.dataset_manage, name="dataset_manage"),
    path("provider/datasets/<int:dataset_id>/upload/", ingestion_views.dataset_upload, name="dataset_upload"),
    path("provider/datasets/<int:dataset_id>/uploads/", ingestion_views.upload_open, name="upload_open"),
    path("provider/uploads/<int:batch_id>/files/", ingestion_views.upload_batch_files, name="upload_batch_files"),
    path("provider/uploads/<int:batch_id>/close/", ingestion_views.upload_batch_close_view, name="upload_batch_close"),
    path("provider/uploads/<int:batch_id>/cancel/", ingestion_views.upload_batch_cancel, name="upload_batch_cancel"),
    path("provider/uploads/<int:batch_id>/", ingestion_views.upload_batch_detail, name="upload_batch_detail"),
    path("provider/uploads/<int:batch_id>/retry/", ingestion_views.upload_batch_retry_view, name="upload_batch_retry"),
    path("provider/uploads/<int:batch_id>/progress/", ingestion_views.upload_batch_progress, name="upload_batch_progress"),
]
