from django.urls import path

from catalog import api
from catalog.search import api as search_api

urlpatterns = [
    path("datasets/", api.DatasetListApi.as_view(), name="api-dataset-list"),
    path("datasets/<int:dataset_id>/", api.DatasetDetailApi.as_view(), name="api-dataset-detail"),
    path("studies/", search_api.StudyListApi.as_view(), name="api-study-list"),
    path("cohorts/", search_api.CohortApi.as_view(), name="api-cohort"),
]
