from django.contrib import admin
from django.urls import path
from pages import views

urlpatterns = [
    path("", views.home, name="home"),
    path("env/", views.fly_env, name="fly-env"),
    path("visits/", views.visits, name="visits"),
    path("admin/", admin.site.urls),
]
