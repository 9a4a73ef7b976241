"""How unsure an answer from memory would be, scored in [0, 1] from the retrieval itself.

Inputs are the cosine distances of the retrieved memories (any order; ``s_i = 1 - d_i`` clipped to [0, 1], sorted
so ``s_1 >= s_2 >= …``) and, optionally, the answering model's token log-probabilities. With
``ramp(x; lo, hi) = clip((x - lo) / (hi - lo), 0, 1)``:

=============  ===============================================  ==========================================
component      formula                                          meaning
=============  ===============================================  ==========================================
``top``        ``1 - ramp(s_1; sim_low, sim_high)``             the best memory is not close to the query
``margin``     ``1 - ramp(s_1 - s_2; 0, margin_scale)``         the best memory barely beats the next one
``spread``     ``1 - ramp(std(s_1..s_k); 0, spread_scale)``     a flat profile: nothing stands out
``coverage``   ``1 - min(n_cov, coverage_target) / target``     few memories cover the query, with
                                                                ``n_cov = #{i: s_i >= cover_similarity}``
=============  ===============================================  ==========================================

``u_retrieval = Σ w_c · u_c / Σ w_c`` with default weights top 0.5, margin 0.15, spread 0.1, coverage 0.25 (one
result: ``margin`` counts as 1, ``spread`` as 0, since one memory can't be compared with another; none: 1.0).

With log-probabilities ``lp_1..lp_n`` of the model's answer tokens, ``u_model = 1 - exp(mean(lp))`` (one minus the
geometric-mean token probability) and ``u = (1 - model_weight) · u_retrieval + model_weight · u_model``; without
them ``u = u_retrieval``.

The defaults suit all-MiniLM-L6-v2, where unrelated sentences sit at cosine similarity 0–0.3 and paraphrases above
0.7. The router learns its thresholds on this score per namespace, so the scale matters more than its calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .errors import InvalidArgumentError

__all__ = ["Uncertainty", "UncertaintyEstimator"]


def _ramp(x: float, lo: float, hi: float) -> float:
    if hi <= lo:
        return 1.0 if x >= hi else 0.0
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


@dataclass(frozen=True)
class Uncertainty:
    """A score in [0, 1] (1 = no support at all) and the components it was made from."""

    score: float
    components: dict[str, float] = field(default_factory=dict)
    top_similarity: float = 0.0
    covering: int = 0
    retrieval: float = 1.0
    model: Optional[float] = None


@dataclass(frozen=True)
class UncertaintyEstimator:
    """The estimator; parameters are the formula's constants (see the module docstring)."""

    sim_low: float = 0.3
    sim_high: float = 0.8
    margin_scale: float = 0.15
    spread_scale: float = 0.1
    cover_similarity: float = 0.6
    coverage_target: int = 2
    w_top: float = 0.5
    w_margin: float = 0.15
    w_spread: float = 0.1
    w_coverage: float = 0.25
    model_weight: float = 0.5

    def __post_init__(self) -> None:
        weights = (self.w_top, self.w_margin, self.w_spread, self.w_coverage)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise InvalidArgumentError("component weights must be >= 0 and not all 0")
        if not 0.0 <= self.model_weight <= 1.0:
            raise InvalidArgumentError("model_weight must be in [0, 1]")
        if self.coverage_target < 1:
            raise InvalidArgumentError("coverage_target must be >= 1")

    def estimate(self, distances: Sequence[float], logprobs: Optional[Sequence[float]] = None) -> Uncertainty:
        """The uncertainty of answering from memories at these cosine ``distances`` (and model ``logprobs``)."""
        sims = sorted((min(1.0, max(0.0, 1.0 - float(d))) for d in distances), reverse=True)
        if any(math.isnan(s) for s in sims):
            raise InvalidArgumentError("distances contain NaN")
        u_model: Optional[float] = None
        if logprobs is not None:
            lps = [float(x) for x in logprobs]
            if not lps:
                raise InvalidArgumentError("logprobs is empty: pass None when the model gave none")
            if any(math.isnan(x) or x > 1e-9 for x in lps):
                raise InvalidArgumentError("log-probabilities must be <= 0 and not NaN")
            u_model = 1.0 - math.exp(sum(lps) / len(lps))
        if not sims:
            comps = {"top": 1.0, "margin": 1.0, "spread": 1.0, "coverage": 1.0}
            u_ret, top, covering = 1.0, 0.0, 0
        else:
            top = sims[0]
            covering = sum(1 for s in sims if s >= self.cover_similarity)
            mean = sum(sims) / len(sims)
            std = math.sqrt(sum((s - mean) ** 2 for s in sims) / len(sims))
            comps = {
                "top": 1.0 - _ramp(top, self.sim_low, self.sim_high),
                "margin": 1.0 - _ramp(top - sims[1], 0.0, self.margin_scale) if len(sims) > 1 else 1.0,
                "spread": 1.0 - _ramp(std, 0.0, self.spread_scale) if len(sims) > 1 else 0.0,
                "coverage": 1.0 - min(covering, self.coverage_target) / self.coverage_target,
            }
            total = self.w_top + self.w_margin + self.w_spread + self.w_coverage
            u_ret = (
                self.w_top * comps["top"]
                + self.w_margin * comps["margin"]
                + self.w_spread * comps["spread"]
                + self.w_coverage * comps["coverage"]
            ) / total
        score = u_ret if u_model is None else (1 - self.model_weight) * u_ret + self.model_weight * u_model
        return Uncertainty(
            score=min(1.0, max(0.0, score)),
            components=comps,
            top_similarity=top,
            covering=covering,
            retrieval=u_ret,
            model=u_model,
        )
