"""A seeded synthetic source with planted structure that graph recommenders must be able to find.

The generator plants, in this order:

* **Communities.** Every user and item belongs to one of ``num_communities`` latent communities (sizes
  drawn from a Dirichlet, so they are uneven). A user draws each interaction from their own community with
  a per-user probability around ``community_affinity``, from one secondary community with half of the
  remainder, and from the global popularity distribution otherwise.
* **Popularity and activity.** Item popularity is Zipf-like (weight ``rank ** -popularity_exponent``); user
  activity is log-normal on top of a floor of ``min_user_interactions``. Every item is consumed at least
  once (by a user of its own community), so the dataset has exactly ``num_users`` users, ``num_items``
  items and ``num_interactions`` distinct (user, item) pairs.
* **Social ties.** About ``avg_friends`` friends per user (heavy-tailed), a fraction ``social_homophily`` of
  them drawn inside the user's community.
* **Item attributes.** A genre tied to the item's community (``genre_purity``), sometimes a second genre, a
  creator drawn from the community's own pool, and a random release decade: these become knowledge-graph
  triples (head ``str(item id)``) and ``item_features``. Users get an age bucket loosely tied to their
  community.
* **Ratings and time.** Ratings 1..5, higher on average for in-community items; timestamps in unix seconds,
  each user active over their own window between 2015 and 2019.

Raw ids are 1-based integers (users ``1..num_users``, items ``1..num_items``), like MovieLens, so the
raw-to-internal id mapping in :func:`tasks.ingest.dataset.build_dataset` is exercised. Everything is
vectorised numpy, so millions of interactions take seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.ingest.tables import RawTables

GENRES = (
    "Action",
    "Comedy",
    "Drama",
    "Horror",
    "Romance",
    "Sci-Fi",
    "Documentary",
    "Animation",
    "Thriller",
    "Western",
    "Musical",
    "Crime",
)
DECADES = (1950, 1960, 1970, 1980, 1990, 2000, 2010)
AGE_BUCKETS = ("under-18", "18-24", "25-34", "35-44", "45-54", "55+")
# 2015-01-01T00:00:00Z; user activity windows fall between this and about four years later.
_EPOCH_START = 1_420_070_400
_DAY = 86_400


def make_synthetic(
    num_users: int = 943,
    num_items: int = 1682,
    num_interactions: int = 100_000,
    seed: int = 2020,
    *,
    num_communities: int = 8,
    community_affinity: float = 0.9,
    popularity_exponent: float = 1.0,
    activity_sigma: float = 1.0,
    min_user_interactions: int = 5,
    max_user_fraction: float = 0.5,
    avg_friends: float = 10.0,
    social_homophily: float = 0.9,
    genre_purity: float = 0.9,
) -> RawTables:
    """Generate the ``synthetic`` source: interactions, social ties, a knowledge graph and features.

    Args:
        num_users: Users (raw ids ``1..num_users``); every one has at least ``min_user_interactions``.
        num_items: Items (raw ids ``1..num_items``); every one is consumed at least once.
        num_interactions: Exact number of distinct (user, item) interactions.
        seed: Seed for every random choice; the same arguments always give the same tables.
        num_communities: Latent user/item communities.
        community_affinity: Mean share of a user's interactions drawn from their own community (each user's
            share is Beta-distributed around it).
        popularity_exponent: Zipf exponent of item popularity (0 is uniform).
        activity_sigma: Log-normal sigma of user activity (larger is more heavy-tailed).
        min_user_interactions: Floor of interactions per user.
        max_user_fraction: Cap on one user's interactions as a fraction of ``num_items`` (raised when
            ``num_interactions`` cannot be met under it).
        avg_friends: Target mean number of friends per user (0 gives no social table).
        social_homophily: Probability that a friendship is drawn inside the user's community.
        genre_purity: Probability that an item's genre is its community's genre.

    Returns:
        Raw tables named ``synthetic`` with ``interactions`` (``user``, ``item``, ``rating``,
        ``timestamp``), ``social`` (``user``, ``friend``, each undirected tie once), ``kg`` (relations
        ``has_genre``, ``directed_by``, ``released_in``), ``user_features`` (``age_bucket``),
        ``item_features`` (``genre``, ``decade``) and ``rating_scale`` ``(1, 5)``.

    Raises:
        ValueError: When the sizes are inconsistent (too few interactions to give every user the minimum
            and every item one interaction, or more than the users' caps allow).
    """
    _check_sizes(
        num_users, num_items, num_interactions, num_communities, min_user_interactions, max_user_fraction
    )
    for name, value in (
        ("community_affinity", community_affinity),
        ("social_homophily", social_homophily),
        ("genre_purity", genre_purity),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    rng = np.random.default_rng(seed)
    n_comm = num_communities

    # Communities: uneven sizes; every community owns at least one item so in-community draws never fail.
    user_share = rng.dirichlet(np.full(n_comm, 5.0))
    user_comm = rng.choice(n_comm, size=num_users, p=user_share)
    item_comm = rng.permutation(
        np.concatenate([np.arange(n_comm), rng.choice(n_comm, size=num_items - n_comm, p=user_share)])
    )
    popularity = rng.permutation(np.arange(1, num_items + 1, dtype=np.float64)) ** -popularity_exponent

    # Per-user mixture: own community, one secondary community, global popularity.
    concentration = 10.0
    p_own = rng.beta(
        max(community_affinity * concentration, 1e-3),
        max((1.0 - community_affinity) * concentration, 1e-3),
        size=num_users,
    )
    p_second = (1.0 - p_own) / 2.0
    second_comm = (user_comm + rng.integers(1, max(n_comm, 2), size=num_users)) % max(n_comm, 1)

    activity = _user_activity(
        rng, num_users, num_items, num_interactions, min_user_interactions, max_user_fraction, activity_sigma
    )
    sampler = _ItemSampler(item_comm, popularity, n_comm)
    user, item = _draw_interactions(
        rng, activity, user_comm, item_comm, p_own, p_second, second_comm, sampler, num_items
    )

    in_comm = item_comm[item] == user_comm[user]
    rating, timestamp = _ratings_and_times(rng, user, in_comm, num_users)
    order = np.lexsort((timestamp, user))
    interactions = pd.DataFrame(
        {
            "user": user[order] + 1,
            "item": item[order] + 1,
            "rating": rating[order],
            "timestamp": timestamp[order],
        }
    )

    social = _social_ties(rng, user_comm, avg_friends, social_homophily)
    kg, item_features = _item_attributes(rng, item_comm, n_comm, genre_purity)
    user_features = _user_features(rng, user_comm)
    return RawTables(
        name="synthetic",
        interactions=interactions,
        social=social,
        kg=kg,
        user_features=user_features,
        item_features=item_features,
        rating_scale=(1.0, 5.0),
    )


def _check_sizes(
    num_users: int,
    num_items: int,
    num_interactions: int,
    num_communities: int,
    min_user_interactions: int,
    max_user_fraction: float,
) -> None:
    """Reject sizes no dataset can satisfy, with a message that says which bound failed."""
    if num_users < 1 or num_items < 1:
        raise ValueError(f"num_users and num_items must be positive, got {num_users} and {num_items}")
    if not 1 <= num_communities <= num_items:
        raise ValueError(f"num_communities must lie in [1, num_items={num_items}], got {num_communities}")
    if min_user_interactions < 1:
        raise ValueError(f"min_user_interactions must be at least 1, got {min_user_interactions}")
    if not 0.0 < max_user_fraction <= 1.0:
        raise ValueError(f"max_user_fraction must lie in (0, 1], got {max_user_fraction}")
    low = max(num_users * min_user_interactions, num_items)
    high = num_users * num_items
    if not low <= num_interactions <= high:
        raise ValueError(
            f"num_interactions={num_interactions} cannot be met with {num_users} users and {num_items} "
            f"items: it must lie in [{low}, {high}] (every user gets at least {min_user_interactions} "
            "interactions, every item at least one, and no (user, item) pair repeats)."
        )


def _user_cap(
    num_users: int, num_items: int, num_interactions: int, min_user_interactions: int, fraction: float
) -> int:
    """Most interactions one user may have: ``fraction`` of the catalogue, raised when the total needs it."""
    return min(
        num_items, max(min_user_interactions, int(fraction * num_items), -(-num_interactions // num_users))
    )


def _user_activity(
    rng: np.random.Generator,
    num_users: int,
    num_items: int,
    num_interactions: int,
    min_user_interactions: int,
    max_user_fraction: float,
    sigma: float,
) -> np.ndarray:
    """Interactions per user: a floor plus a log-normal share of the rest, capped, summing exactly."""
    cap = _user_cap(num_users, num_items, num_interactions, min_user_interactions, max_user_fraction)
    weight = rng.lognormal(0.0, sigma, size=num_users)
    counts = np.full(num_users, min_user_interactions, dtype=np.int64)
    rest = num_interactions - int(counts.sum())
    # Hand out the remainder in proportion to the weights; whatever lands above a user's cap is handed
    # out again among the users below it (a few passes: the excess shrinks geometrically).
    while rest > 0:
        room = cap - counts
        w = np.where(room > 0, weight, 0.0)
        counts += rng.multinomial(rest, w / w.sum())
        over = np.maximum(counts - cap, 0)
        counts -= over
        rest = int(over.sum())
    return counts


class _ItemSampler:
    """Popularity-weighted item draws, either inside a given community or over all items.

    Items are laid out by community; within community ``c`` the cumulative popularity is shifted by ``c`` so
    one ``searchsorted`` serves draws from any mix of communities.
    """

    def __init__(self, item_comm: np.ndarray, popularity: np.ndarray, num_communities: int) -> None:
        self.by_comm = np.argsort(item_comm, kind="stable")
        comm_sorted = item_comm[self.by_comm]
        weight = popularity[self.by_comm]
        sizes = np.bincount(item_comm, minlength=num_communities)
        self.comm_end = np.cumsum(sizes)
        comm_start = self.comm_end - sizes
        cum = np.cumsum(weight)
        before = np.concatenate([[0.0], cum])[comm_start]
        total = np.bincount(comm_sorted, weights=weight, minlength=num_communities)
        self.shifted_cdf = comm_sorted + (cum - before[comm_sorted]) / total[comm_sorted]
        self.global_cdf = np.cumsum(popularity)

    def in_community(self, rng: np.random.Generator, comm: np.ndarray) -> np.ndarray:
        """One popularity-weighted item of each given community."""
        pos = np.searchsorted(self.shifted_cdf, comm + rng.random(len(comm)), side="right")
        return self.by_comm[np.minimum(pos, self.comm_end[comm] - 1)]

    def anywhere(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` popularity-weighted items from the whole catalogue."""
        pos = np.searchsorted(self.global_cdf, rng.random(n) * self.global_cdf[-1], side="right")
        return np.minimum(pos, len(self.global_cdf) - 1)


def _group_rank(sorted_groups: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values (the input is grouped, e.g. sorted)."""
    n = len(sorted_groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    run = np.diff(np.r_[starts, n])
    return np.arange(n, dtype=np.int64) - np.repeat(starts, run)


def _seed_every_item(
    rng: np.random.Generator, activity: np.ndarray, user_comm: np.ndarray, item_comm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Give every item one interaction, from a user of its community chosen in proportion to activity.

    Each user owns ``activity[u]`` slots; each item takes one free slot of its community (any free slot when
    its community has run out), so no user receives more seed items than their activity allows.
    """
    num_items = len(item_comm)
    slot_user = np.repeat(np.arange(len(activity)), activity)
    slot_user = slot_user[rng.permutation(len(slot_user))]
    slot_user = slot_user[np.argsort(user_comm[slot_user], kind="stable")]
    slot_comm = user_comm[slot_user]
    items = rng.permutation(num_items)
    items = items[np.argsort(item_comm[items], kind="stable")]
    n_comm = int(max(item_comm.max(), user_comm.max())) + 1
    slots_per_comm = np.bincount(slot_comm, minlength=n_comm)
    items_per_comm = np.bincount(item_comm, minlength=n_comm)
    slot_taken = _group_rank(slot_comm) < items_per_comm[slot_comm]
    item_matched = _group_rank(item_comm[items]) < slots_per_comm[item_comm[items]]
    # Both arrays are grouped by community in the same order, so the k-th taken slot of a community pairs
    # with the k-th matched item of that community.
    seed_user = [slot_user[slot_taken]]
    seed_item = [items[item_matched]]
    leftover = items[~item_matched]
    if len(leftover):
        free = slot_user[~slot_taken]
        seed_user.append(free[rng.permutation(len(free))[: len(leftover)]])
        seed_item.append(leftover)
    return np.concatenate(seed_user), np.concatenate(seed_item)


def _draw_interactions(
    rng: np.random.Generator,
    activity: np.ndarray,
    user_comm: np.ndarray,
    item_comm: np.ndarray,
    p_own: np.ndarray,
    p_second: np.ndarray,
    second_comm: np.ndarray,
    sampler: _ItemSampler,
    num_items: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs, exactly ``activity[u]`` per user, every item at least once.

    Sampling without replacement is done in rounds: each user draws (with replacement) a few more
    candidates than they still need, candidates already held or repeated are dropped, and the first ones
    up to the need are kept. Rounds oversample more and more; after a few, draws switch to uniform over the
    catalogue so that very active users whose community is exhausted still finish quickly.
    """
    seed_user, seed_item = _seed_every_item(rng, activity, user_comm, item_comm)
    keys = np.sort(seed_user * num_items + seed_item)
    need = activity - np.bincount(seed_user, minlength=len(activity))
    parts_user, parts_item = [seed_user], [seed_item]
    round_ = 0
    while need.any():
        oversample = 1.1 * 2.0**round_
        n_draw = np.where(need > 0, np.ceil(need * oversample).astype(np.int64) + 1, 0)
        cand_user = np.repeat(np.arange(len(activity)), n_draw)
        if round_ < 6:
            u = rng.random(len(cand_user))
            own = u < p_own[cand_user]
            second = ~own & (u < p_own[cand_user] + p_second[cand_user])
            anywhere = ~(own | second)
            cand_item = np.empty(len(cand_user), dtype=np.int64)
            cand_item[own] = sampler.in_community(rng, user_comm[cand_user[own]])
            cand_item[second] = sampler.in_community(rng, second_comm[cand_user[second]])
            cand_item[anywhere] = sampler.anywhere(rng, int(anywhere.sum()))
        else:
            cand_item = rng.integers(0, num_items, size=len(cand_user))
        cand_key = cand_user * num_items + cand_item
        # First occurrence of each key, in draw order (np.unique sorts, which would favour low item ids).
        _, first = np.unique(cand_key, return_index=True)
        first.sort()
        cand_key, cand_user, cand_item = cand_key[first], cand_user[first], cand_item[first]
        pos = np.minimum(np.searchsorted(keys, cand_key), len(keys) - 1)
        new = keys[pos] != cand_key
        cand_key, cand_user, cand_item = cand_key[new], cand_user[new], cand_item[new]
        keep = _group_rank(cand_user) < need[cand_user]
        cand_key, cand_user, cand_item = cand_key[keep], cand_user[keep], cand_item[keep]
        parts_user.append(cand_user)
        parts_item.append(cand_item)
        keys = np.sort(np.concatenate([keys, cand_key]))
        need -= np.bincount(cand_user, minlength=len(activity))
        round_ += 1
    return np.concatenate(parts_user), np.concatenate(parts_item)


def _ratings_and_times(
    rng: np.random.Generator, user: np.ndarray, in_comm: np.ndarray, num_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ratings 1..5 (about one star higher in-community) and unix-second timestamps in per-user windows."""
    user_bias = rng.normal(0.0, 0.4, size=num_users)
    mean = np.where(in_comm, 3.9, 2.9) + user_bias[user]
    rating = np.clip(np.rint(rng.normal(mean, 0.9)), 1.0, 5.0)
    start = _EPOCH_START + rng.integers(0, 3 * 365 * _DAY, size=num_users)
    span = np.clip(rng.lognormal(np.log(180 * _DAY), 0.8, size=num_users), 2 * _DAY, 2 * 365 * _DAY)
    timestamp = start[user] + (rng.random(len(user)) * span[user]).astype(np.int64)
    return rating.astype(np.float64), timestamp.astype(np.int64)


def _member_of_same_group(rng: np.random.Generator, group: np.ndarray, src: np.ndarray) -> np.ndarray:
    """For each user in ``src``, a uniformly drawn user of the same ``group`` (possibly themself)."""
    members = np.argsort(group, kind="stable")
    sizes = np.bincount(group)
    start = np.cumsum(sizes) - sizes
    g = group[src]
    return members[start[g] + np.minimum((rng.random(len(src)) * sizes[g]).astype(np.int64), sizes[g] - 1)]


def _social_ties(
    rng: np.random.Generator, user_comm: np.ndarray, avg_friends: float, homophily: float
) -> pd.DataFrame | None:
    """Undirected friendships, mostly inside a community, each once as (user, friend) with raw ids."""
    num_users = len(user_comm)
    if avg_friends <= 0 or num_users < 2:
        return None
    # Each tie is proposed by one side, so a user proposes half their expected degree; the log-normal
    # sociability gives a heavy-tailed degree distribution.
    sociability = rng.lognormal(0.0, 0.7, size=num_users)
    proposals = rng.poisson(sociability / sociability.mean() * avg_friends / 2.0)
    src = np.repeat(np.arange(num_users), proposals)
    members = np.argsort(user_comm, kind="stable")
    sizes = np.bincount(user_comm)
    start = np.cumsum(sizes) - sizes
    comm = user_comm[src]
    same_comm = members[
        start[comm] + np.minimum((rng.random(len(src)) * sizes[comm]).astype(np.int64), sizes[comm] - 1)
    ]
    dst = np.where(rng.random(len(src)) < homophily, same_comm, rng.integers(0, num_users, size=len(src)))
    ok = src != dst
    pairs = np.unique(np.stack([np.minimum(src[ok], dst[ok]), np.maximum(src[ok], dst[ok])], axis=1), axis=0)
    return pd.DataFrame({"user": pairs[:, 0] + 1, "friend": pairs[:, 1] + 1})


def _genre_names(n: int) -> np.ndarray:
    """Readable genre names, numbered ones when more communities than named genres are asked for."""
    names = list(GENRES[:n]) + [f"Genre-{k}" for k in range(len(GENRES), n)]
    return np.array(names, dtype=object)


def _item_attributes(
    rng: np.random.Generator, item_comm: np.ndarray, num_communities: int, genre_purity: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """KG triples (genre, creator, decade) keyed by ``str(item id)``, and the item feature table."""
    num_items = len(item_comm)
    genres = _genre_names(num_communities)
    genre = np.where(
        rng.random(num_items) < genre_purity, item_comm, rng.integers(0, num_communities, size=num_items)
    )
    # A second genre for about a quarter of the items, any genre but the first.
    has_second = (rng.random(num_items) < 0.25) & (num_communities > 1)
    second = (genre + rng.integers(1, max(num_communities, 2), size=num_items)) % num_communities
    # Creators: each community has its own pool (about one creator per 8 items), most items take a creator
    # from their community's pool.
    per_comm = np.maximum(np.bincount(item_comm, minlength=num_communities) // 8, 1)
    pool_start = np.cumsum(per_comm) - per_comm
    own_pool = rng.random(num_items) < 0.9
    creator_comm = np.where(own_pool, item_comm, rng.integers(0, num_communities, size=num_items))
    creator = pool_start[creator_comm] + (rng.random(num_items) * per_comm[creator_comm]).astype(np.int64)
    decade = np.asarray(DECADES)[rng.integers(0, len(DECADES), size=num_items)]

    head = (np.arange(num_items) + 1).astype(str).astype(object)
    kg = pd.DataFrame(
        {
            "head": np.concatenate([head, head[has_second], head, head]),
            "relation": np.repeat(
                np.array(["has_genre", "has_genre", "directed_by", "released_in"], dtype=object),
                [num_items, int(has_second.sum()), num_items, num_items],
            ),
            "tail": np.concatenate(
                [
                    "genre:" + genres[genre],
                    "genre:" + genres[second[has_second]],
                    np.char.add("person:", creator.astype(str)).astype(object),
                    np.char.add("decade:", decade.astype(str)).astype(object),
                ]
            ),
        }
    )
    item_features = pd.DataFrame(
        {"item": np.arange(num_items) + 1, "genre": genres[genre], "decade": decade.astype(np.int64)}
    )
    return kg, item_features


def _user_features(rng: np.random.Generator, user_comm: np.ndarray) -> pd.DataFrame:
    """An age bucket per user: half the users take their community's typical bucket, half a random one."""
    num_users = len(user_comm)
    n_comm = int(user_comm.max()) + 1
    typical = rng.integers(0, len(AGE_BUCKETS), size=n_comm)
    bucket = np.where(
        rng.random(num_users) < 0.5, typical[user_comm], rng.integers(0, len(AGE_BUCKETS), size=num_users)
    )
    return pd.DataFrame({"user": np.arange(num_users) + 1, "age_bucket": np.asarray(AGE_BUCKETS)[bucket]})
