"""The champion gate: the ``champion`` alias moves to a new version only if it is better.

"Better" (:func:`is_better`) means a higher HR@K on the same held-out examples, or the same
HR@K and a higher MRR@K. The figures come from :func:`srgnn.evaluation.evaluate.evaluate`: the
training DAG's ``evaluate`` task scores candidate and champion once, and the ``gate`` task
decides from those figures with :func:`promote_if_better`. Without a champion the candidate
becomes it (``first model``); a champion that cannot be loaded or evaluated is kept (the
candidate can still be promoted by hand with :func:`srgnn.serving.registry.promote`). The
figures, the decision and its reason are tags of the new model version.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

from srgnn.config import K
from srgnn.serving import registry

__all__ = ["DECISION_FIRST", "DECISION_PROMOTED", "DECISION_KEPT", "GateResult", "is_better",
           "promote_if_better"]

logger = logging.getLogger(__name__)

DECISION_FIRST = "first model"
DECISION_PROMOTED = "promoted"
DECISION_KEPT = "kept champion"


def is_better(candidate: dict, champion: dict, k: int = K) -> bool:
    """True when ``candidate`` has the higher HR@K, or the same HR@K and a higher MRR@K.

    A NaN (no examples) is never better. Equal figures are not better: the champion stays.
    """
    c = (candidate[f"HR@{k}"], candidate[f"MRR@{k}"])
    o = (champion[f"HR@{k}"], champion[f"MRR@{k}"])
    if any(math.isnan(x) for x in c):
        return False
    if any(math.isnan(x) for x in o):
        return True
    return c > o  # lexicographic: HR first, MRR breaks a tie


@dataclass(frozen=True)
class GateResult:
    """What :func:`promote_if_better` decided for one model version."""

    model_name: str
    version: str
    decision: str  # DECISION_FIRST, DECISION_PROMOTED or DECISION_KEPT
    reason: str
    promoted: bool  # True when the alias now points at this version
    champion_version: str | None  # holder of the alias after the gate
    previous_champion_version: str | None
    split: str
    examples: int
    k: int
    candidate: dict  # {"HR@K": .., "MRR@K": ..}
    champion: dict | None  # the previous champion's figures on the same examples

    def tags(self) -> dict[str, str]:
        """Model-version tags recording the decision."""
        k = self.k
        out = {
            "gate.decision": self.decision,
            "gate.reason": self.reason,
            "gate.split": self.split,
            "gate.examples": str(self.examples),
            f"gate.candidate_hr_at_{k}": _fmt(self.candidate.get(f"HR@{k}")),
            f"gate.candidate_mrr_at_{k}": _fmt(self.candidate.get(f"MRR@{k}")),
        }
        if self.previous_champion_version is not None:
            out["gate.champion_version"] = self.previous_champion_version
        if self.champion is not None:
            out[f"gate.champion_hr_at_{k}"] = _fmt(self.champion.get(f"HR@{k}"))
            out[f"gate.champion_mrr_at_{k}"] = _fmt(self.champion.get(f"MRR@{k}"))
        return out

    def as_dict(self) -> dict:
        return {
            "model_name": self.model_name, "version": self.version, "decision": self.decision,
            "reason": self.reason, "promoted": self.promoted,
            "champion_version": self.champion_version,
            "previous_champion_version": self.previous_champion_version,
            "split": self.split, "examples": self.examples, "k": self.k,
            "candidate": self.candidate, "champion": self.champion,
        }


def _fmt(value) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6f}"



def promote_if_better(
    version,
    candidate_metrics: dict,
    *,
    split: str,
    champion_metrics: dict[str, dict] | None = None,
    evaluate_version: Callable[[str], dict] | None = None,
    model_name: str = registry.MODEL_NAME,
    alias: str = registry.CHAMPION_ALIAS,
    k: int = K,
    tracking=None,
) -> GateResult:
    """The gate: move ``alias`` to ``version`` only if it beats the current holder.

    Args:
        version: the registered version under consideration.
        candidate_metrics: its :func:`~srgnn.evaluation.evaluate.evaluate` result on ``split``.
        split: the held-out split both are compared on (recorded in the tags).
        champion_metrics: ``{version: evaluate result}`` of champions already evaluated on the
            same examples (the ``evaluate`` task's); the holder of the alias is looked up here.
        evaluate_version: ``f(version) -> evaluate result`` for a holder that is not in
            ``champion_metrics`` (another version took the alias meanwhile); without it such a
            holder is kept.
        tracking: an ``MlflowClient`` (default: one on the current URIs).

    Returns:
        A :class:`GateResult`; its :meth:`~GateResult.tags` are set on the version.
    """
    tracking = tracking or registry.client()
    version = str(version)
    cand = {f"HR@{k}": candidate_metrics[f"HR@{k}"], f"MRR@{k}": candidate_metrics[f"MRR@{k}"]}
    examples = int(candidate_metrics["examples"])
    current = registry.champion_version(tracking, model_name, alias)
    previous = str(current.version) if current is not None else None
    champ = None

    if current is None:
        decision, promoted = DECISION_FIRST, True
        reason = f"no model held the alias '{alias}'; version {version} is the first champion"
    elif previous == version:  # the gate ran again for the same version (a retried task)
        decision, promoted = DECISION_PROMOTED, True
        reason = f"version {version} already holds the alias '{alias}'"
    elif examples == 0:
        decision, promoted = DECISION_KEPT, False
        reason = f"no held-out examples in {split} to compare on; version {previous} stays champion"
    else:
        try:
            result = (champion_metrics or {}).get(previous)
            if result is None:
                if evaluate_version is None:
                    raise LookupError(f"version {previous} was not evaluated on these examples")
                result = evaluate_version(previous)
            champ = {f"HR@{k}": result[f"HR@{k}"], f"MRR@{k}": result[f"MRR@{k}"]}
        except Exception as exc:  # noqa: BLE001 - an unreadable champion must not crash the gate
            logger.warning("the champion version %s could not be evaluated: %s", previous, exc)
            decision, promoted = DECISION_KEPT, False
            reason = (f"the champion (version {previous}) could not be evaluated "
                      f"({type(exc).__name__}: {exc}); it stays champion until promoted by hand")
        else:
            promoted = is_better(cand, champ, k)
            decision = DECISION_PROMOTED if promoted else DECISION_KEPT
            reason = _compare_reason(cand, champ, k, version, previous, promoted)

    if promoted and previous != version:
        registry.promote(version, model_name=model_name, alias=alias, tracking=tracking)
    gate = GateResult(
        model_name=model_name,
        version=version,
        decision=decision,
        reason=reason,
        promoted=promoted,
        champion_version=version if promoted else previous,
        previous_champion_version=previous,
        split=split,
        examples=examples,
        k=k,
        candidate=cand,
        champion=champ,
    )
    for key, value in gate.tags().items():
        tracking.set_model_version_tag(model_name, version, key, value)
    logger.info("gate for %s version %s: %s (%s)", model_name, version, decision, reason)
    return gate


def _compare_reason(cand: dict, champ: dict, k: int, version: str, previous: str,
                    promoted: bool) -> str:
    hr, mrr = f"HR@{k}", f"MRR@{k}"
    figures = (f"candidate {hr} {cand[hr]:.4f} / {mrr} {cand[mrr]:.4f} vs champion "
               f"(version {previous}) {champ[hr]:.4f} / {champ[mrr]:.4f}")
    if promoted:
        why = f"higher {hr}" if cand[hr] > champ[hr] else f"same {hr}, higher {mrr}"
        return f"{why}: {figures}"
    if cand[hr] == champ[hr] and cand[mrr] == champ[mrr]:
        return f"not better (equal): {figures}"
    why = f"lower {hr}" if cand[hr] < champ[hr] else f"same {hr}, {mrr} not higher"
    return f"{why}: {figures}"
