"""Hyperparameter search with Optuna, on the validation split only, within a time budget.

Models are scored by validation NDCG@k; the candidate set by validation recall@``candidate_cutoff``
(the number of candidates the ranker sees), searching its per-source fusion weights with the
sources fitted once. (Recall at the size of the whole union would not depend on the weights.)

The test part of the split is set aside first and never seen; the rest is split again the same
way into train and validation, and each trial fits on train and scores NDCG@k on validation.
The study lives in an SQLite file (resumable, inspectable with optuna-dashboard); the best
parameters are also written as a config snippet.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from feedrec.config import FeedrecConfig, model_table
from feedrec.data.side import SideInfo
from feedrec.models import build_model
from feedrec.models.retrieval.candidates import CandidateRecommender
from feedrec.offline.protocol import evaluate_recommender, sample_test_users, targets_after
from feedrec.offline.split import Split

SearchSpace = Callable[[optuna.Trial], dict[str, Any]]

#: The declared search spaces (``ModelDecl.space`` in ``feedrec.config``), by model name; the candidate
#: set's is built by ``tune`` from the configured sources.
SPACES: dict[str, SearchSpace] = {name: d.space for name, d in model_table().items() if d.space is not None}


def _as_config(model: str, flat: dict[str, Any]) -> dict[str, Any]:
    """Optuna's flat parameter names back into the config's shape (weight_<source> -> weights)."""
    if model != "candidates":
        return flat
    weights = {key.removeprefix("weight_"): round(v, 4) for key, v in flat.items() if key.startswith("weight_")}
    return {"weights": weights, "fusion_k": round(flat["fusion_k"], 3)}


@dataclass
class TuneResult:
    model: str
    metric: str
    best_params: dict[str, Any]
    best_value: float
    default_value: float
    n_trials: int
    seconds: float
    study_path: str
    params_path: str

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


def tune(
    model: str,
    split: Split,
    side: SideInfo | None,
    cfg: FeedrecConfig,
    *,
    out_dir: Path,
    n_trials: int = 30,
    timeout_s: float = 600.0,
    k: int = 10,
    candidate_cutoff: int = 200,
    seed: int = 42,
    study_name: str | None = None,
    on_trial: Callable[[int, float], None] | None = None,
) -> TuneResult:
    """Search ``model``'s hyperparameters on ``split``'s train part scored on its validation part
    (the test part is never looked at); returns the best ones. Changes neither ``cfg`` nor any
    module state."""
    if model not in SPACES:
        raise ValueError(f"no search space for {model!r}; tunable: {', '.join(SPACES)}")
    space = SPACES[model]
    if model == "candidates":
        sources = list(cfg.models.candidates.quotas)

        def space(t: optuna.Trial) -> dict[str, Any]:
            return {
                "weights": {s: t.suggest_float(f"weight_{s}", 0.0, 1.0) for s in sources},
                "fusion_k": t.suggest_float("fusion_k", 1.0, 100.0, log=True),
            }

    data = targets_after(split.train, split.valid)  # train / validation
    data = sample_test_users(data, cfg.eval.max_test_users, seed=seed)

    reuse = contextlib.ExitStack()
    if model == "candidates":
        # The sources are fitted once; trials only re-weight their fusion, so each costs seconds.
        merged = build_model("candidates", cfg).fit(data.train, side)
        assert isinstance(merged, CandidateRecommender)
        metric = f"recall@{candidate_cutoff}"

        def score(params: dict[str, Any]) -> float:
            merged.weights = {**(cfg.models.candidates.weights or {}), **params.get("weights", {})}
            merged.fusion_k = params.get("fusion_k", cfg.models.candidates.fusion_k)
            return evaluate_recommender(merged, data, k=k, recall_cutoffs=(candidate_cutoff,))[metric]

        reuse.enter_context(merged.reusing_source_lists())  # each source scores the users once, not per trial

    else:
        metric = f"ndcg@{k}"
        configured = build_model(model, cfg)

        def score(params: dict[str, Any]) -> float:
            fitted = configured.clone().set_params(**params).fit(data.train, side)
            return evaluate_recommender(fitted, data, k=k)[metric]

    out_dir.mkdir(parents=True, exist_ok=True)
    study_path = out_dir / f"{model}.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name or model,  # the same name resumes an earlier study in the same file
        storage=f"sqlite:///{study_path}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )

    def objective(trial: optuna.Trial) -> float:
        value = score(space(trial))
        if on_trial:
            on_trial(trial.number, value)
        return value

    with reuse:
        default_value = score({})
        start = time.perf_counter()
        study.optimize(objective, n_trials=n_trials, timeout=timeout_s)
        seconds = time.perf_counter() - start
    best = _as_config(model, dict(study.best_params)) if study.best_value >= default_value else {}
    params_path = out_dir / f"{model}.best.yaml"
    params_path.write_text(
        f"# feedrec tune {model}: validation {metric} {max(study.best_value, default_value):.4f} "
        f"(defaults {default_value:.4f}); use with --config or merge into your config\n"
        + yaml.safe_dump({"models": {model: best}}, sort_keys=True)
    )
    (out_dir / f"{model}.best.json").write_text(json.dumps(best, indent=2))
    return TuneResult(
        model=model,
        metric=metric,
        best_params=best,
        best_value=max(study.best_value, default_value),
        default_value=default_value,
        n_trials=len(study.trials),
        seconds=round(seconds, 1),
        study_path=str(study_path),
        params_path=str(params_path),
    )
