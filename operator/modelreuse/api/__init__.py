"""The ModelReuse API (modelreuse.io/v1alpha1): spec and status models, the one source of the CRD schema."""

from modelreuse.api.base import API_VERSION, GROUP, KIND, PLURAL, VERSION, ApiModel
from modelreuse.api.resource import ModelReuse, ObjectMeta
from modelreuse.api.spec import ModelReuseSpec
from modelreuse.api.status import ModelReuseStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ApiModel",
    "ModelReuse",
    "ModelReuseSpec",
    "ModelReuseStatus",
    "ObjectMeta",
]
