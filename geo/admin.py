from django import forms
from django.contrib import admin

from geo import services
from geo.models import ServiceArea


class ServiceAreaForm(forms.ModelForm):
    class Meta:
        model = ServiceArea
        fields = list(services.EDITABLE)


@admin.register(ServiceArea)
class ServiceAreaAdmin(admin.ModelAdmin):
    form = ServiceAreaForm
    list_display = ["name", "city", "latitude", "longitude", "radius_km", "is_active", "updated_at"]
    list_filter = ["city", "is_active"]
    list_editable = ["radius_km", "is_active"]
    search_fields = ["name", "city"]

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in services.EDITABLE if name in form.cleaned_data}
        if change:
            services.service_area_update(area=obj, **{k: v for k, v in fields.items() if k in form.changed_data})
        else:
            obj.pk = services.service_area_create(**fields).pk
