"""A training-free graph filter on the item-item graph: GF-CF, generalised to the blur-sharpen family (BSPM).

Shen et al., "How Powerful is Graph Convolution for Recommendation?", CIKM 2021,
https://arxiv.org/abs/2105.07153 (GF-CF), and Choi et al., "Blurring-Sharpening Process Models for
Collaborative Filtering", SIGIR 2023, https://arxiv.org/abs/2211.09324 (BSPM). Both show that what a trained
LightGCN learns is close to a fixed low-pass filter of the normalised item-item graph, which can be applied
in closed form, with no embedding and no optimiser.

With ``R`` the binary training matrix ``[U, I]``, ``R~ = D_U^-1/2 R D_I^-1/2`` and ``P = R~^T R~`` (the
normalised item-item graph, never materialised: ``x P = (x R~^T) R~``), a user's history row ``x`` is scored
as ``s = S(B(x) + beta * L(x))``:

- ``B`` **blurs** (heat diffusion on the item graph, ``dx/dt = x P - x`` up to ``blur_time`` in
  ``blur_steps`` Euler steps; one step of time 1 is GF-CF's linear filter ``x P``);
- ``L`` is the **ideal low-pass** filter ``x D_I^-1/2 V V^T D_I^1/2`` with ``V`` the top-``rank`` right
  singular vectors of ``R~`` (GF-CF; computed by seeded subspace iteration on sparse products, no dense
  ``I x I``), weighted by ``beta`` (``ideal_weight``);
- ``S`` **sharpens** (reverse diffusion ``dx/dt = -x P`` up to ``sharpen_time`` in ``sharpen_steps`` steps of
  a Taylor/Runge-Kutta integrator of order ``sharpen_order``: 1 is Euler, 4 is classical RK4, which on this
  linear equation equals the 4th-order Taylor polynomial of ``exp(-h P)``). ``sharpen_time = 0`` is GF-CF.

The published settings on Gowalla: GF-CF ``rank 256, beta 0.3, no sharpening`` (Recall@20 0.1849 /
NDCG@20 0.1518); BSPM ``rank 448, beta 0.2, sharpen_time 2.5`` in one RK4 step (0.1920 / 0.1597). The
defaults here are GF-CF's; the search space covers both. The score is linear in ``x``, so a new user is
scored from the history it brings exactly as a known one (no fold-in), and the served model is the same
item-item form as EASE's: ``W = S(B(I) + beta L(I))`` computed one block of identity rows at a time, its
``export_neighbors`` largest-magnitude weights kept per row (:meth:`GraphFilter.sparse_weights`).

Cost: fitting is ``O(nnz (rank + p) iters + I (rank + p)^2 iters)`` (the subspace iteration); scoring ``B``
users is ``O(B (nnz (blur_steps + sharpen_steps * sharpen_order) + I rank))``, all sparse-dense products on
the user-item matrix, so it runs on Gowalla-size data on a laptop (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from models.base import SearchPrior, Trial, register_model
from models.graphs import csr_from_sorted, transpose_csr
from models.itemitem import ItemItemRecommender, top_n_block, top_n_csr


@register_model
class GraphFilter(ItemItemRecommender):
    """GF-CF / BSPM: blur, ideal low-pass and sharpen the history row on the normalised item graph.

    Args:
        num_users: U.
        num_items: I.
        rank: Singular vectors in the ideal low-pass filter (capped at ``min(U, I)`` by :meth:`fit`).
        ideal_weight: ``beta``, the weight of the ideal low-pass term (0 turns it off and skips the SVD).
        blur_time: Diffusion time of the blurring step (1 with one step is GF-CF's ``x P``).
        blur_steps: Euler steps of the blurring.
        sharpen_time: Reverse-diffusion time (0: no sharpening, GF-CF).
        sharpen_steps: Integrator steps of the sharpening.
        sharpen_order: Order of each sharpening step: 1 (Euler) to 4 (RK4).
        svd_iterations: Subspace iterations of the top-``rank`` SVD (each two sparse products and a QR).
        seed: Seed of the SVD's random start (the fit is deterministic given it).
        export_neighbors: Weights kept per row of the served item-item matrix.

    Attributes:
        norm_crow, norm_col, norm_values: ``R~`` as CSR ``[U, I]``.
        item_scale: ``D_I^-1/2`` per item (0 for items without training interactions), ``[I]``.
        basis: ``V``, the top right singular vectors of ``R~``, ``[I, rank]``.
    """

    name = "graphfilter"
    fitted_buffers: ClassVar[tuple[str, ...]] = (
        "user_indptr",
        "user_items",
        "norm_crow",
        "norm_col",
        "norm_values",
        "item_scale",
        "basis",
    )
    #: Oversampling of the subspace iteration beyond ``rank`` (standard randomized-SVD practice).
    oversample: int = 32
    norm_crow: Tensor
    norm_col: Tensor
    norm_values: Tensor
    item_scale: Tensor
    basis: Tensor

    def __init__(
        self,
        num_users: int,
        num_items: int,
        rank: int = 256,
        ideal_weight: float = 0.3,
        blur_time: float = 1.0,
        blur_steps: int = 1,
        sharpen_time: float = 0.0,
        sharpen_steps: int = 1,
        sharpen_order: int = 1,
        svd_iterations: int = 6,
        seed: int = 0,
        export_neighbors: int = 500,
    ) -> None:
        super().__init__(num_users, num_items)
        checks = {
            "rank": rank >= 1,
            "ideal_weight": ideal_weight >= 0,
            "blur_time": blur_time >= 0,
            "blur_steps": blur_steps >= 1,
            "sharpen_time": sharpen_time >= 0,
            "sharpen_steps": sharpen_steps >= 1,
            "sharpen_order": 1 <= sharpen_order <= 4,
            "svd_iterations": svd_iterations >= 1,
            "export_neighbors": export_neighbors >= 1,
        }
        for field, ok in checks.items():
            if not ok:
                raise ValueError(f"{field} is out of range: got {locals()[field]!r} (see GraphFilter's Args)")
        self.rank = int(rank)
        self.ideal_weight = float(ideal_weight)
        self.blur_time = float(blur_time)
        self.blur_steps = int(blur_steps)
        self.sharpen_time = float(sharpen_time)
        self.sharpen_steps = int(sharpen_steps)
        self.sharpen_order = int(sharpen_order)
        self.svd_iterations = int(svd_iterations)
        self.seed = int(seed)
        self.export_neighbors = int(export_neighbors)
        self.register_buffer("norm_crow", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("norm_col", torch.zeros(0, dtype=torch.long))
        self.register_buffer("norm_values", torch.zeros(0))
        self.register_buffer("item_scale", torch.zeros(num_items))
        self.register_buffer("basis", torch.zeros(num_items, 0))
        self._operators: tuple[Tensor, Tensor] | None = None
        self._record_hparams(
            rank=self.rank,
            ideal_weight=self.ideal_weight,
            blur_time=self.blur_time,
            blur_steps=self.blur_steps,
            sharpen_time=self.sharpen_time,
            sharpen_steps=self.sharpen_steps,
            sharpen_order=self.sharpen_order,
            svd_iterations=self.svd_iterations,
            seed=self.seed,
            export_neighbors=self.export_neighbors,
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """GF-CF's Gowalla/Yelp setting: rank 256, beta 0.3, one blur step of time 1, no sharpening."""
        return {
            "rank": 256,
            "ideal_weight": 0.3,
            "blur_time": 1.0,
            "blur_steps": 1,
            "sharpen_time": 0.0,
            "sharpen_steps": 1,
            "sharpen_order": 1,
            "svd_iterations": 6,
            "seed": 0,
            "export_neighbors": 500,
        }

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Rank 32-1024 (log), beta 0-1, sharpening time 0-3 with Euler or RK4: GF-CF and BSPM's settings."""
        return {
            "rank": trial.suggest_int("rank", 32, 1024, log=True),
            "ideal_weight": trial.suggest_float("ideal_weight", 0.0, 1.0),
            "sharpen_time": trial.suggest_float("sharpen_time", 0.0, 3.0),
            "sharpen_order": trial.suggest_categorical("sharpen_order", [1, 4]),
        }

    @classmethod
    def search_prior(cls) -> SearchPrior:
        """BSPM's published Gowalla setting (rank 448, beta 0.2, sharpening time 2.5 in one RK4 step).

        The tuner tries it first; on Gowalla it is the best of 24 trials chosen on validation
        (benchmarks/RESULTS.md, "Gowalla in an hour").
        """
        return SearchPrior(
            hparams={"rank": 448, "ideal_weight": 0.2, "sharpen_time": 2.5, "sharpen_order": 4}
        )

    def __repr__(self) -> str:
        return (
            f"GraphFilter({self.num_users}, {self.num_items}, rank={self.rank}, "
            f"ideal_weight={self.ideal_weight:g}, blur_time={self.blur_time:g}, "
            f"sharpen_time={self.sharpen_time:g}, sharpen_order={self.sharpen_order})"
        )

    # -- fitting ----------------------------------------------------------------------------------------

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._operators = None  # R~ changed: rebuild the CSR operators on next use

    def _fit_weights(self, x: Tensor) -> None:
        """``R~`` from the binary matrix, then the top-``rank`` right singular vectors of ``R~``.

        Args:
            x: Binary training matrix, sparse CSR float ``[U, I]``.
        """
        device = self.norm_values.device
        crow, col = x.crow_indices().to(device), x.col_indices().to(device)
        user_deg = (crow[1:] - crow[:-1]).to(torch.float32)
        item_deg = torch.bincount(col, minlength=self.num_items).to(torch.float32)
        rows = torch.repeat_interleave(torch.arange(self.num_users, device=device), crow[1:] - crow[:-1])
        inv_sqrt_item = torch.where(item_deg > 0, item_deg.clamp_min(1.0).rsqrt(), torch.zeros_like(item_deg))
        self.norm_crow = crow.clone()
        self.norm_col = col.clone()
        self.norm_values = user_deg[rows].rsqrt() * inv_sqrt_item[col]
        self.item_scale = inv_sqrt_item
        self._operators = None
        rank = min(self.rank, self.num_users, self.num_items)
        self.basis = self._top_right_singular_vectors(rank) if self.ideal_weight > 0 else self.basis[:, :0]

    def operators(self) -> tuple[Tensor, Tensor]:
        """``(R~, R~^T)`` as CSR ``[U, I]`` and ``[I, U]``, built once after a fit or a load."""
        if self._operators is None:
            norm = csr_from_sorted(
                torch.repeat_interleave(
                    torch.arange(self.num_users, device=self.norm_crow.device),
                    self.norm_crow[1:] - self.norm_crow[:-1],
                ),
                self.norm_col,
                self.norm_values,
                (self.num_users, self.num_items),
            )
            self._operators = (norm, transpose_csr(norm))
        return self._operators

    def _propagate(self, zt: Tensor) -> Tensor:
        """``(z P)^T = R~^T (R~ z^T)`` for item-major ``z^T`` ``[I, B]`` -> ``[I, B]``."""
        norm, norm_t = self.operators()
        return torch.sparse.mm(norm_t, torch.sparse.mm(norm, zt))

    def _top_right_singular_vectors(self, rank: int) -> Tensor:
        """Top-``rank`` right singular vectors of ``R~`` by subspace iteration on ``R~^T R~`` (``[I, rank]``).

        A seeded Gaussian start of ``rank + oversample`` columns, ``svd_iterations`` rounds of
        ``Q <- qr(R~^T R~ Q)``, then Rayleigh-Ritz: the eigenvectors of ``Q^T R~^T R~ Q`` rotate ``Q``
        onto the singular directions, sorted by singular value.
        """
        device = self.norm_values.device
        width = min(rank + self.oversample, self.num_users, self.num_items)
        generator = torch.Generator(device=device).manual_seed(self.seed)
        q = torch.randn(self.num_items, width, generator=generator, device=device)
        q, _ = torch.linalg.qr(q)
        for _ in range(self.svd_iterations):
            q, _ = torch.linalg.qr(self._propagate(q))
        projected = q.T @ self._propagate(q)
        eigenvalues, eigenvectors = torch.linalg.eigh((projected + projected.T) / 2)
        order = torch.argsort(eigenvalues, descending=True)[:rank]
        return (q @ eigenvectors[:, order]).contiguous()

    # -- scoring ----------------------------------------------------------------------------------------

    def filter_items_major(self, xt: Tensor) -> Tensor:
        """The filter on item-major history columns: ``S(B(x) + beta L(x))^T`` for ``x^T`` ``[I, B]``.

        Shapes:
            xt ``[I, B]`` -> ``[I, B]``.
        """
        out = xt
        step = self.blur_time / self.blur_steps
        for _ in range(self.blur_steps):
            out = out + step * (self._propagate(out) - out)
        if self.ideal_weight > 0 and self.basis.shape[1] > 0:
            scale = self.item_scale[:, None]
            low = self.basis @ (self.basis.T @ (xt * scale))
            # D_I^1/2 on the way out; items without interactions have no low-pass component at all.
            inv = torch.where(scale > 0, 1.0 / scale.clamp_min(1e-30), torch.zeros_like(scale))
            out = out + self.ideal_weight * (low * inv)
        if self.sharpen_time > 0:
            step = self.sharpen_time / self.sharpen_steps
            coefficients = sharpening_polynomial(step, self.sharpen_order)
            for _ in range(self.sharpen_steps):
                power = out
                total = out * coefficients[0]
                for coefficient in coefficients[1:]:
                    power = self._propagate(power)
                    total = total + coefficient * power
                out = total
        return out

    def _score_rows(self, rows: Tensor) -> Tensor:
        """``S(B(x) + beta L(x))`` for dense history rows ``x``.

        Shapes:
            rows ``[B, I]`` -> ``[B, I]``.
        """
        return self.filter_items_major(rows.T.contiguous()).T.contiguous()

    # -- export -----------------------------------------------------------------------------------------

    def sparse_weights(self) -> Tensor:
        """The served ``W`` (row ``j`` = the filter of item ``j`` alone), top ``export_neighbors`` per row."""
        rows, cols, values = [], [], []
        device = self.norm_values.device
        block = 1024
        for start in range(0, self.num_items, block):
            end = min(self.num_items, start + block)
            eye = torch.zeros(self.num_items, end - start, device=device)
            eye[torch.arange(start, end, device=device), torch.arange(end - start, device=device)] = 1.0
            weights = self.filter_items_major(eye).T.cpu()  # [b, I]: rows start..end of W
            r, c, v = top_n_block(
                weights, start, min(self.export_neighbors, self.num_items), by_magnitude=True
            )
            rows.append(r)
            cols.append(c)
            values.append(v)
        return top_n_csr(rows, cols, values, self.num_items)


def sharpening_polynomial(step: float, order: int) -> list[float]:
    """One sharpening step as a polynomial in ``P``: coefficients of ``sum_{j <= order} (-step P)^j / j!``.

    Classical RK4 on ``dx/dt = -x P`` over one step ``h`` gives exactly these coefficients with ``order = 4``
    (the update is the 4th-order Taylor polynomial of ``exp(-h P)``); Euler is ``order = 1``.
    """
    return [(-step) ** j / math.factorial(j) for j in range(order + 1)]
