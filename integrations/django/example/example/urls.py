from django.urls import path

from files import views

urlpatterns = [
    path("", views.page),
    path("handles", views.new_handle),
    path("upload", views.upload),
    path("files/<str:name>", views.by_name),
    path("f/<uuid:uuid>", views.by_uuid),
    path("tus-done", views.TusDone.as_view()),
]
