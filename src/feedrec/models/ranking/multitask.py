"""A deep multi-task ranker (PyTorch): DCN-v2 cross layers beside an MLP, one head per engagement.

Inputs: numeric features (standardized with training statistics; missing values become 0 with a
missing-indicator column) and the surface as a learned embedding. Body: ``n_cross`` DCN-v2 cross
layers ``x_{l+1} = x_0 * (W x_l + b) + x_l`` in parallel with a ReLU MLP; their outputs are
concatenated. Heads: ``click``, ``like`` and ``hide`` (logistic) and ``dwell`` (log1p seconds of a
clicked impression, squared error on clicked rows only). ``score`` combines the heads with weights
from config: ``w_click p_click + w_like p_like + w_dwell dwell / (1 + dwell) - w_hide p_hide``.
Early stopping on the validation loss; seeded.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn

HEADS = ("click", "like", "dwell", "hide")


@dataclass
class MultiTaskSet:
    numeric: np.ndarray  # (n, f) float, NaN = missing
    surface: np.ndarray  # (n,) int64 codes, 0 = unknown
    labels: dict[str, np.ndarray]  # head -> (n,) float; dwell in seconds (0 when not clicked)


class _Net(nn.Module):
    def __init__(self, n_in: int, n_surfaces: int, hidden: int, n_cross: int) -> None:
        super().__init__()
        self.surface = nn.Embedding(n_surfaces, 8)
        d = n_in + 8
        self.cross = nn.ModuleList([nn.Linear(d, d) for _ in range(n_cross)])
        self.deep = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({h: nn.Linear(d + hidden, 1) for h in HEADS})

    def forward(self, x: torch.Tensor, surface: torch.Tensor) -> dict[str, torch.Tensor]:
        x0 = torch.cat([x, self.surface(surface)], dim=1)
        xl = x0
        for layer in self.cross:
            xl = x0 * layer(xl) + xl
        z = torch.cat([xl, self.deep(x0)], dim=1)
        return {h: head(z).squeeze(1) for h, head in self.heads.items()}


class MultiTaskRanker:
    int8_: bool = False  # set on the copy quantized() returns

    def __init__(
        self,
        hidden: int = 128,
        n_cross: int = 2,
        lr: float = 2e-3,
        batch_size: int = 2048,
        epochs: int = 20,
        patience: int = 2,
        weights: dict[str, float] | None = None,
        seed: int = 42,
        num_threads: int = 0,
    ) -> None:
        self.hidden = hidden
        self.n_cross = n_cross
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.weights = weights
        self.seed = seed
        self.num_threads = num_threads

    def _inputs(self, data: MultiTaskSet) -> tuple[torch.Tensor, torch.Tensor]:
        missing = np.isnan(data.numeric)
        x = np.where(missing, 0.0, (np.nan_to_num(data.numeric) - self.mean_) / self.std_)
        x = np.concatenate([x, missing[:, self.has_missing_]], axis=1).astype(np.float32)
        surface = np.clip(data.surface, 0, self.n_surfaces_ - 1)
        return torch.from_numpy(x), torch.from_numpy(surface.astype(np.int64))

    def _loss(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = bce(out["click"], y["click"]) + bce(out["like"], y["like"]) + bce(out["hide"], y["hide"])
        clicked = y["click"] > 0
        if clicked.any():
            loss = loss + nn.functional.mse_loss(out["dwell"][clicked], torch.log1p(y["dwell"][clicked])) * 0.1
        return loss

    def fit(self, train: MultiTaskSet, valid: MultiTaskSet) -> Self:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        self.mean_ = np.nanmean(train.numeric, axis=0)
        self.mean_ = np.nan_to_num(self.mean_)
        self.std_ = np.nan_to_num(np.nanstd(train.numeric, axis=0), nan=1.0)
        self.std_[self.std_ == 0] = 1.0
        self.has_missing_ = np.isnan(train.numeric).any(axis=0)
        self.n_surfaces_ = int(max(train.surface.max(initial=0), valid.surface.max(initial=0))) + 1
        x, s = self._inputs(train)
        y = {h: torch.from_numpy(train.labels[h].astype(np.float32)) for h in HEADS}
        xv, sv = self._inputs(valid)
        yv = {h: torch.from_numpy(valid.labels[h].astype(np.float32)) for h in HEADS}
        net = _Net(x.shape[1], self.n_surfaces_, self.hidden, self.n_cross)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        best, best_state, stale = np.inf, copy.deepcopy(net.state_dict()), 0
        for _ in range(self.epochs):
            net.train()
            perm = torch.from_numpy(rng.permutation(x.shape[0]))
            for lo in range(0, x.shape[0], self.batch_size):
                b = perm[lo : lo + self.batch_size]
                loss = self._loss(net(x[b], s[b]), {h: v[b] for h, v in y.items()})
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                valid_loss = float(self._loss(net(xv, sv), yv))
            if valid_loss < best - 1e-5:
                best, best_state, stale = valid_loss, copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        net.load_state_dict(best_state)
        self.net_ = net.eval()
        self.best_valid_loss_ = best
        return self

    def quantized(self) -> MultiTaskRanker:
        """A copy whose linear layers hold int8 weights (PyTorch dynamic quantization: activations
        are quantized on the fly), about 4x smaller and faster on CPU. Check it against the fp32
        ranker before serving it: ``feedrec.models.compress.CompressionGate``."""
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            net = torch.ao.quantization.quantize_dynamic(copy.deepcopy(self.net_), {nn.Linear}, dtype=torch.qint8)
        twin = copy.copy(self)
        twin.net_ = net.eval()
        twin.int8_ = True
        return twin

    @property
    def is_int8(self) -> bool:
        return self.int8_

    def size_bytes(self) -> int:
        """Size of the network's serialized weights."""
        buffer = io.BytesIO()
        torch.save(self.net_.state_dict(), buffer)
        return buffer.tell()

    @torch.no_grad()
    def predict_heads(self, data: MultiTaskSet) -> dict[str, np.ndarray]:
        """Per head: probabilities for click, like and hide; expected dwell seconds for dwell."""
        x, s = self._inputs(data)
        out = self.net_(x, s)
        heads = {h: torch.sigmoid(out[h]).numpy() for h in ("click", "like", "hide")}
        heads["dwell"] = torch.expm1(out["dwell"]).clamp(min=0).numpy()
        return heads

    def predict(self, data: MultiTaskSet) -> np.ndarray:
        """The feed score: the heads combined with ``weights`` (click 1, like 0.5, dwell 0.2, hide 1)."""
        w = {"click": 1.0, "like": 0.5, "dwell": 0.2, "hide": 1.0} | (self.weights or {})
        p = self.predict_heads(data)
        return (
            w["click"] * p["click"]
            + w["like"] * p["like"]
            + w["dwell"] * p["dwell"] / (1 + p["dwell"])
            - w["hide"] * p["hide"]
        )

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "state": self.net_.state_dict(),
                "mean": self.mean_,
                "std": self.std_,
                "has_missing": self.has_missing_,
                "n_surfaces": self.n_surfaces_,
                "int8": self.is_int8,
                "params": {
                    k: getattr(self, k)
                    for k in (
                        "hidden",
                        "n_cross",
                        "lr",
                        "batch_size",
                        "epochs",
                        "patience",
                        "weights",
                        "seed",
                        "num_threads",
                    )
                },
            },
            path / "multitask.pt",
        )

    @classmethod
    def load(cls, path: Path) -> MultiTaskRanker:
        blob = torch.load(path / "multitask.pt", weights_only=False)
        ranker = cls(**blob["params"])
        ranker.mean_, ranker.std_, ranker.has_missing_ = blob["mean"], blob["std"], blob["has_missing"]
        ranker.n_surfaces_ = blob["n_surfaces"]
        net = _Net(
            len(ranker.mean_) + int(ranker.has_missing_.sum()), ranker.n_surfaces_, ranker.hidden, ranker.n_cross
        )
        ranker.net_ = net.eval()
        if blob.get("int8"):  # rebuild the quantized structure, then load its int8 weights
            ranker = ranker.quantized()
        ranker.net_.load_state_dict(blob["state"])
        return ranker
