"""Which model scores: locating it cheaply before Spark starts, and loading it.

:func:`locate_model` checks that a model exists without loading it and pins an alias to the
version it points to (one registry request, or a look at a local folder); :func:`resolve_model`
loads the :class:`~srgnn.serving.recommender.Recommender`. A model that does not exist is a
user's mistake (``InputError``, one line); a registry that cannot be asked is
:class:`ModelUnavailable`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from srgnn.config import Settings

__all__ = ["DEFAULT_MODEL_URI", "ModelRef", "ModelUnavailable", "locate_model", "resolve_model",
           "topk_options"]

DEFAULT_MODEL_URI = "models:/srgnn@champion"
# models:/NAME@ALIAS or models:/NAME/VERSION: what the registry can be asked about cheaply.
_REGISTRY_URI = re.compile(r"^models:/([^/@]+)(?:@([^/]+)|/(\d+))/?$")
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class ModelUnavailable(RuntimeError):
    """The model registry could not be asked about the model (reported as one line)."""


@dataclass(frozen=True)
class ModelRef:
    """A model fixed for one scoring run."""

    uri: str  # a concrete URI (models:/srgnn/7) or a local folder
    name: str  # registered model name, e.g. "srgnn"
    version: str  # registry version, e.g. "7" ("local" for a folder)
    kind: str = "srgnn"  # what ranks: srgnn, markov, iknn, blend:srgnn+markov, ...

    @property
    def label(self) -> str:
        """The warehouse's ``model_version``: ``<kind>:<version>``, e.g. ``srgnn:7``,
        ``markov:8``, ``blend:srgnn+markov:9`` (the registered model is ``model_name``)."""
        return f"{self.kind}:{self.version}"


def _folder_kind(folder: Path) -> str:
    """The ``kind`` recorded in a saved recommender's ``recommender.json`` (``srgnn`` for a
    folder written before kinds, or an MLflow model folder)."""
    import json

    meta = next((path for path in (folder / "recommender.json",  # or inside an MLflow model
                                   folder / "artifacts" / "recommender" / "recommender.json")
                 if path.exists()), None)
    if meta is None:
        return "srgnn"
    try:
        return str(json.loads(meta.read_text()).get("kind") or "srgnn")
    except ValueError:
        return "srgnn"  # Recommender.load reports the broken file


def topk_options(settings: Settings, topk_index: str | None = None) -> dict:
    """The :class:`~srgnn.serving.predict.Scorer` options of ``settings`` that say how top-K is
    found (``topk_index`` overrides the setting: evaluation passes ``"exact"``)."""
    return {"topk_index": topk_index or settings.topk_index,
            "approximate_above": settings.approximate_above,
            "nprobe": settings.approximate_nprobe, "recall_target": settings.approximate_recall,
            "recall_sample": settings.recall_sample}


def resolve_model(settings: Settings, model_uri: str | None, *, topk_index: str | None = None):
    """Load the recommender and pin the model version. Returns ``(recommender, ModelRef)``.

    Its top-K is found as ``settings`` say (:func:`topk_options`; ``topk_index`` overrides)."""
    from srgnn.serving.recommender import Recommender

    options = topk_options(settings, topk_index)
    model_uri = model_uri or DEFAULT_MODEL_URI
    if os.path.isdir(model_uri):
        recommender = Recommender.load(model_uri, **options)
        return recommender, ModelRef(uri=os.path.abspath(model_uri), name="srgnn",
                                     version="local", kind=recommender.kind)
    from srgnn.serving import registry

    try:
        recommender, info = registry.load_recommender(model_uri, settings=settings, **options)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds for a missing model
        from srgnn.data.inputs import InputError

        first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
        raise InputError(f"cannot load model {model_uri} ({first_line}); train and register one first "
                         "(srgnn train) or pass --model") from None
    return recommender, ModelRef(uri=info.resolved_uri, name=info.name or "srgnn",
                                 version=str(info.version or info.run_id or "unknown"),
                                 kind=recommender.kind)


def locate_model(settings: Settings, model_uri: str | None) -> ModelRef:
    """Check that the model exists without loading it, and pin an alias to its version.

    A local folder must hold a saved recommender (or an MLflow model); ``models:/NAME@ALIAS``
    and ``models:/NAME/VERSION`` are looked up in the registry (one request). Other URIs
    (``runs:/...``) are checked when loaded. Raises InputError for a model that does not
    exist, :class:`ModelUnavailable` when the registry cannot be asked.
    """
    from srgnn.data.inputs import InputError
    from srgnn.warehouse import redact_url

    uri = model_uri or DEFAULT_MODEL_URI
    scheme = urlparse(uri).scheme
    if len(scheme) <= 1 or scheme == "file":  # a local path (or a Windows drive letter)
        folder = Path(urlparse(uri).path if scheme == "file" else uri)
        if not folder.is_dir():
            raise InputError(f"no model folder at {uri}; pass --model a folder written by "
                             "Recommender.save or a models:/ URI")
        if not any((folder / name).exists() for name in ("recommender.json", "MLmodel")):
            raise InputError(f"{uri} holds no saved recommender (recommender.json) and no MLflow "
                             "model (MLmodel)")
        return ModelRef(uri=str(folder.resolve()), name="srgnn", version="local",
                        kind=_folder_kind(folder))
    found = _REGISTRY_URI.match(uri)
    if found is None:
        return ModelRef(uri=uri, name="srgnn", version="unknown")
    name, alias, number = found.groups()
    from srgnn.serving import registry

    where = f"the MLflow registry at {redact_url(settings.tracking_uri)}"
    try:
        registry.connect(settings)
        tracking = registry.client()
        version = (tracking.get_model_version_by_alias(name, alias) if alias
                   else tracking.get_model_version(name, number))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; one line each
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if getattr(exc, "error_code", None) in _NOT_FOUND:
            raise InputError(f"no model {uri} in {where} ({reason}); train and register one "
                             "first (srgnn train) or pass --model") from None
        raise ModelUnavailable(f"cannot look up the model {uri} in {where}: {reason}") from None
    return ModelRef(uri=f"models:/{name}/{version.version}", name=name, version=str(version.version),
                    kind=(version.tags or {}).get("kind", "srgnn"))
