from django.db import models


class Order(models.Model):
    email = models.EmailField()
    total = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=20, default="placed")
    reference = models.CharField(max_length=40, unique=True)

    class Meta:
        app_label = "orders"
