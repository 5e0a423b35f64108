import os

from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.templatetags.static import static

from .models import Visit


def home(request):
    css = static("pages/site.css")
    return HttpResponse(
        f'<!doctype html><html><head><link rel="stylesheet" href="{css}"></head>'
        "<body><h1>django-site</h1></body></html>"
    )


def fly_env(request):
    """What the platform told this machine about itself."""
    env = {k: v for k, v in os.environ.items() if k.startswith("FLY_")}
    env["PRIMARY_REGION"] = os.environ.get("PRIMARY_REGION")
    return JsonResponse(env)


def visits(request):
    """Count this request in the database on the volume and say how many there were."""
    Visit.objects.create(machine_id=os.environ.get("FLY_MACHINE_ID", ""))
    return JsonResponse(
        {"visits": Visit.objects.count(), "database": str(connection.settings_dict["NAME"])}
    )
