from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from models.samplers import (
    HardNegativeSampler,
    NegativeSampler,
    PopularityNegativeSampler,
    SamplerName,
    make_negative_sampler,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def dense_graph(
    num_users: int = 40, num_items: int = 30, density: float = 0.7, seed: int = 0
) -> torch.Tensor:
    """Random pairs covering about ``density`` of the matrix, plus a user with all items but item 7."""
    rng = np.random.default_rng(seed)
    mask = rng.random((num_users, num_items)) < density
    mask[0] = True
    mask[0, 7] = False
    mask[1] = False  # a user without training items
    users, items = np.nonzero(mask)
    pairs = np.stack([users, items], 1)
    pairs = np.concatenate([pairs, pairs[:50]])  # duplicates are allowed
    return torch.from_numpy(pairs).long()


def positive_mask(pairs: torch.Tensor, num_users: int, num_items: int) -> torch.Tensor:
    mask = torch.zeros(num_users, num_items, dtype=torch.bool)
    mask[pairs[:, 0], pairs[:, 1]] = True
    return mask


def item_score_fn(table: torch.Tensor):
    def score_fn(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return table[users.unsqueeze(1), items]

    return score_fn


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["uniform", "popularity", "hard"])
def test_never_returns_a_positive_on_a_dense_graph(name: SamplerName, device: str) -> None:
    num_users, num_items = 40, 30
    pairs = dense_graph(num_users, num_items)
    sampler = make_negative_sampler(name, pairs, num_users, num_items, pool_size=4, device=device)
    table = torch.randn(num_users, num_items, generator=torch.Generator().manual_seed(1)).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    users = torch.arange(num_users, device=device).repeat(50)
    negatives = sampler.sample(users, 6, generator=generator, score_fn=item_score_fn(table))

    assert negatives.shape == (len(users), 6)
    assert negatives.dtype == torch.long
    assert negatives.device.type == device
    assert int(negatives.min()) >= 0 and int(negatives.max()) < num_items
    positives = positive_mask(pairs, num_users, num_items).to(device)
    assert not bool(positives[users.unsqueeze(1), negatives].any())
    # User 0 has a single non-positive item.
    assert bool((negatives[users == 0] == 7).all())
    assert bool(sampler.is_positive(users.unsqueeze(1), negatives).logical_not().all())


@pytest.mark.parametrize("name", ["uniform", "popularity", "hard"])
def test_deterministic_under_a_generator(name: SamplerName) -> None:
    pairs = dense_graph(density=0.3)
    sampler = make_negative_sampler(name, pairs, 40, 30, pool_size=3)
    table = torch.randn(40, 30, generator=torch.Generator().manual_seed(1))
    users = torch.randint(0, 40, (500,), generator=torch.Generator().manual_seed(2))

    def draw(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sampler.sample(users, 3, generator=gen, score_fn=item_score_fn(table))

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_uniform_is_uniform_over_each_users_non_positives() -> None:
    num_items = 12
    pairs = torch.tensor([[0, 0], [0, 3], [0, 4], [0, 11], [1, 5]])
    sampler = make_negative_sampler("uniform", pairs, 2, num_items)
    gen = torch.Generator().manual_seed(0)
    draws = sampler.sample(torch.zeros(40_000, dtype=torch.long), 1, generator=gen).flatten()
    counts = torch.bincount(draws, minlength=num_items)
    assert counts[[0, 3, 4, 11]].sum() == 0
    free = counts[[1, 2, 5, 6, 7, 8, 9, 10]].numpy()
    assert chisquare(free).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.75, 1.0])
def test_popularity_frequencies_follow_count_to_the_alpha(alpha: float) -> None:
    num_items = 8
    counts = torch.tensor([1, 2, 4, 8, 16, 3, 6, 0])
    items = torch.repeat_interleave(torch.arange(num_items), counts)
    users = torch.arange(len(items)) % 5 + 1  # users 1..5 hold the positives; user 0 holds none
    pairs = torch.stack([users, items], 1)
    sampler = make_negative_sampler("popularity", pairs, 6, num_items, alpha=alpha)
    gen = torch.Generator().manual_seed(0)
    n = 60_000
    draws = sampler.sample(torch.zeros(n, dtype=torch.long), 1, generator=gen).flatten()
    observed = torch.bincount(draws, minlength=num_items).double()
    weights = counts.double().pow(alpha)
    expected = weights / weights.sum() * n
    support = expected > 0
    assert observed[~support].sum() == 0  # a never-seen item has weight 0 when alpha > 0
    assert chisquare(observed[support].numpy(), expected[support].numpy()).pvalue > 1e-3


def test_popularity_falls_back_to_uniform_non_positives_after_the_last_round() -> None:
    # User 0 holds every item with a training count, so every popularity draw is rejected; the only
    # non-positives are the never-seen items 4 and 5.
    pairs = torch.tensor([[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]])
    sampler = PopularityNegativeSampler(pairs, 2, 6, max_rounds=3)
    gen = torch.Generator().manual_seed(0)
    draws = sampler.sample(torch.zeros(2000, dtype=torch.long), 2, generator=gen)
    assert set(draws.unique().tolist()) == {4, 5}


def test_hard_returns_the_best_scored_candidate_of_its_pool() -> None:
    pairs = dense_graph(density=0.4)
    sampler = make_negative_sampler("hard", pairs, 40, 30, pool_size=5)
    assert isinstance(sampler, HardNegativeSampler)
    table = torch.randn(40, 30, generator=torch.Generator().manual_seed(3))
    seen: list[torch.Tensor] = []

    def score_fn(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled()
        seen.append(items.clone())
        return table[users.unsqueeze(1), items]

    users = torch.randint(0, 40, (300,), generator=torch.Generator().manual_seed(4))
    negatives = sampler.sample(users, 3, generator=torch.Generator().manual_seed(0), score_fn=score_fn)
    assert len(seen) == 1 and seen[0].shape == (300, 15)
    pool = seen[0].view(300, 3, 5)
    pool_scores = table[users.view(-1, 1, 1), pool]
    expected = pool.gather(2, pool_scores.argmax(2, keepdim=True)).squeeze(2)
    assert torch.equal(negatives, expected)
    # Harder than a uniform draw: the returned negatives score above the pool average.
    assert float(table[users.unsqueeze(1), negatives].mean()) > float(pool_scores.mean()) + 0.5


def test_hard_without_score_fn_is_an_error() -> None:
    sampler = make_negative_sampler("hard", dense_graph(), 40, 30)
    with pytest.raises(ValueError, match="score_fn"):
        sampler.sample(torch.arange(3))


def test_factory_and_argument_checks() -> None:
    pairs = dense_graph()
    assert type(make_negative_sampler("uniform", pairs, 40, 30)) is NegativeSampler
    assert isinstance(make_negative_sampler("popularity", pairs.numpy(), 40, 30), PopularityNegativeSampler)
    with pytest.raises(ValueError, match="Unknown negative sampler"):
        make_negative_sampler("bogus", pairs, 40, 30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside"):
        make_negative_sampler("uniform", pairs, 40, 20)
    with pytest.raises(ValueError, match="alpha"):
        make_negative_sampler("popularity", pairs, 40, 30, alpha=-1.0)
    with pytest.raises(ValueError, match="pool_size"):
        make_negative_sampler("hard", pairs, 40, 30, pool_size=0)


def test_user_with_every_item_still_gets_valid_ids_and_empty_training_set_works() -> None:
    full = torch.stack([torch.zeros(5, dtype=torch.long), torch.arange(5)], 1)
    sampler = make_negative_sampler("uniform", full, 2, 5)
    out = sampler.sample(torch.tensor([0, 1, 0]), 4, generator=torch.Generator().manual_seed(0))
    assert int(out.min()) >= 0 and int(out.max()) < 5
    empty = make_negative_sampler("popularity", torch.zeros(0, 2, dtype=torch.long), 3, 5)
    out = empty.sample(torch.tensor([0, 2]), 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3) and int(out.max()) < 5
