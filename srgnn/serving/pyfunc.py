"""The MLflow pyfunc model of a :class:`~srgnn.serving.recommender.Recommender`.

The logged model's only artifact is the folder written by :meth:`Recommender.save`
(``vocab.parquet``, ``recommender.json`` and the ranker's files: ``model.pt`` for SR-GNN,
``baseline.npz`` for a baseline, both for a blend), whatever ranks. Served or loaded with
``mlflow.pyfunc.load_model``, it takes a DataFrame with a column ``items`` (each row a list of
raw item ids, strings, in click order) and the parameter ``k`` (default :data:`srgnn.config.K`),
and returns the columns ``item_ids`` (list of raw ids, best first), ``scores`` (list of floats)
and ``source`` (``"model"``, ``"fallback:pop"`` or ``"fallback:iknn"``). The signature is
inferred from a real batch and its real output. The input has no click times, so an SR-GNN
with ``temporal_edges`` scores every edge with gap 0 here (the nightly scoring, which has the
times, gives it the gaps prepare computes).

The model is logged "from code" (a three-line script that builds
:class:`SessionRecommenderModel`, instead of a cloudpickled object) and without
``code_paths``: it is loaded by the pipeline itself (scoring, evaluation, the gate), which
runs where the ``srgnn`` package is installed, and the model's pip requirements name the
package and its version. A copy of the package inside the model would be put first on
``sys.path`` by MLflow and could shadow the installed version for the rest of the process.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd

from srgnn.config import K
from srgnn.logs import stderr_to_log

__all__ = ["ARTIFACT_KEY", "SessionRecommenderModel", "input_frame", "predict_frame",
           "model_requirements", "infer_model_signature", "log_recommender"]

ARTIFACT_KEY = "recommender"  # pyfunc artifact name of the Recommender folder


def input_frame(sessions) -> pd.DataFrame:
    """The pyfunc input for ``sessions`` (lists of raw item ids): one column ``items``."""
    return pd.DataFrame({"items": [[str(item) for item in session] for session in sessions]})


def predict_frame(recommender, model_input, k: int = K) -> pd.DataFrame:
    """What :meth:`SessionRecommenderModel.predict` returns, computed with ``recommender``."""
    if isinstance(model_input, pd.DataFrame):
        if "items" not in model_input.columns:
            raise ValueError(
                "the input needs a column 'items' holding each session's raw item ids in "
                f"click order; got columns {list(model_input.columns)}."
            )
        sessions = model_input["items"].tolist()
    else:
        sessions = list(model_input)
    # Rows arrive as lists or, after MLflow's schema enforcement, as numpy arrays.
    sessions = [[] if s is None else [str(item) for item in s] for s in sessions]
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    recs = recommender.recommend(sessions, k=k)
    return pd.DataFrame(
        {
            "item_ids": [list(map(str, row)) for row in recs.item_ids.tolist()],
            "scores": [[float(x) for x in row] for row in recs.scores.tolist()],
            "source": [str(s) for s in recs.source.tolist()],
        }
    )


class SessionRecommenderModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of a saved :class:`~srgnn.serving.recommender.Recommender`.

    Input: a DataFrame with a column ``items`` (list of raw item ids per session, click order).
    Params: ``k`` (recommendations per session, default 20).
    Output: a DataFrame with ``item_ids`` (list of raw ids, best first), ``scores`` (list of
    floats) and ``source`` (``"model"``, or ``"fallback:pop"`` for a session without any
    item known to the model).
    """

    def load_context(self, context) -> None:
        from srgnn.serving.recommender import Recommender

        self.recommender = Recommender.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = (params or {}).get("k", K)
        return predict_frame(self.recommender, model_input, k=k)


_MODEL_CODE = """\
# The pyfunc model of srgnn-pipeline: a saved Recommender (artifact 'recommender').
from mlflow.models import set_model

from srgnn.serving.pyfunc import SessionRecommenderModel

set_model(SessionRecommenderModel())
"""


def model_requirements() -> list[str]:
    """pip requirements of the logged model: this package and what it imports to predict.

    Given explicitly so that MLflow does not load the model in a subprocess to guess them.
    """
    from importlib import metadata

    out = []
    for dist in ("srgnn-pipeline", "mlflow", "torch", "numpy", "pandas", "pyarrow"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:  # e.g. srgnn run from a source tree
            out.append(dist)
            continue
        out.append(f"{dist}=={version.split('+')[0]}")  # drop local labels such as +cpu
    return out


def infer_model_signature(recommender, example_sessions, k: int = K):
    """Signature inferred from a real input batch and the model's real output on it."""
    from mlflow.models import infer_signature

    example = input_frame(example_sessions)
    output = predict_frame(recommender, example, k=k)
    return infer_signature(example, output, params={"k": int(k)}), example


def log_recommender(
    recommender,
    example_sessions,
    *,
    name: str = "model",
    registered_model_name: str | None = "srgnn",
    k: int = K,
    tags: dict[str, Any] | None = None,
):
    """Log ``recommender`` as a pyfunc model in the active run and register a new version.

    Args:
        recommender: the :class:`~srgnn.serving.recommender.Recommender` to log.
        example_sessions: a few real sessions (lists of raw item ids); they become the input
            example, and the signature is inferred from them and the model's output.
        name: the logged model's name inside the run.
        registered_model_name: registers a new version of this model (``None``: log only).
        k: default of the ``k`` parameter in the signature.
        tags: tags of the logged model.

    Returns:
        MLflow's ``ModelInfo`` (``registered_model_version``, ``model_uri``, ``model_id``...).
    """
    example_sessions = [list(s) for s in example_sessions]
    if not example_sessions:
        raise ValueError("log_recommender needs at least one example session for the signature.")
    signature, example = infer_model_signature(recommender, example_sessions, k=k)
    with tempfile.TemporaryDirectory(prefix="srgnn-model-") as tmp:
        folder = Path(tmp) / ARTIFACT_KEY
        recommender.save(folder)
        # "Models from code": MLflow stores this file instead of a pickled object and runs it
        # when loading, so the model class always comes from the installed package.
        code = Path(tmp) / "srgnn_model.py"
        code.write_text(_MODEL_CODE)
        with stderr_to_log("mlflow"):  # MLflow prints "Created version ..." to stderr
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(code),
                artifacts={ARTIFACT_KEY: str(folder)},
                registered_model_name=registered_model_name,
                signature=signature,
                input_example=example,
                pip_requirements=model_requirements(),
                tags=tags,
            )
