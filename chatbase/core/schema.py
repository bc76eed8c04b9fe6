"""OpenAPI generation tweaks."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer, direction):
        # Views declare nested InputSerializer/OutputSerializer classes (HackSoft style);
        # their bare names collide across views, so name components after the view:
        # MeApi.OutputSerializer -> "MeOutput".
        qualname = type(serializer).__qualname__
        if "." in qualname:
            outer, inner = qualname.rsplit(".", 1)
            outer = outer.split(".")[-1].removesuffix("Api")
            return outer + inner.removesuffix("Serializer")
        return super().get_serializer_name(serializer, direction)
