from django.db import models


class Visit(models.Model):
    """One request to /visits/, with the machine that answered it."""

    machine_id = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
