"""The ``promote-champion`` task: flow runs promote one at a time (Prefect's global concurrency limit).

The manual and the weekly deployment can finish together. Without a limit both read the same champion (here:
none), both decide against it and both move the alias: two "first champion" decisions, one of them a lie.
With the ``gnnrec-promotion`` limit, the second waits, reads the champion the first one left and compares
with it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.register import MlflowSettings, PromotionDecision
from tasks.register.promotion import RULE_FIRST, RULE_MARGIN
from tests.tasks.register_helpers import planted_dataset, planted_model, register_model, split_of

pytestmark = pytest.mark.slow


def test_concurrent_promotions_end_with_one_champion_and_two_honest_decisions(
    prefect_harness, tmp_path: Path, monkeypatch
) -> None:
    from prefect import flow, get_client

    from flows import steps
    from tasks.register import promotion

    settings = MlflowSettings(registered_model_name="rec").resolved(tmp_path)
    dataset = planted_dataset()
    split = split_of(dataset)
    good = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
    best = register_model(settings, dataset, split, planted_model(dataset, noise=0.0), recipe=2)

    # Widen the window between reading the champion and moving the alias, where an unguarded pair interleaves.
    read_champion = promotion.current_champion

    def slow_read(s: MlflowSettings):
        found = read_champion(s)
        time.sleep(2.0)
        return found

    monkeypatch.setattr(promotion, "current_champion", slow_read)

    decisions: dict[str, PromotionDecision] = {}
    errors: list[BaseException] = []

    def promote_in_a_flow_run(candidate) -> None:
        @flow(name=f"promote-{candidate.version}")
        def promotion_flow() -> PromotionDecision:
            return steps.promote(settings, [candidate], dataset, split)

        try:
            decisions[candidate.version] = promotion_flow()
        except BaseException as err:  # reported by the assertion below, with the thread's error
            errors.append(err)

    threads = [threading.Thread(target=promote_in_a_flow_run, args=(c,)) for c in (good, best)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(decisions) == 2

    first, second = sorted(decisions.values(), key=lambda d: d.champion_version is not None)
    assert first.rule == RULE_FIRST and first.promoted and first.champion_version is None
    # The second one compared with the champion the first one left, not with "no champion".
    assert second.rule == RULE_MARGIN and second.champion_version == first.challenger_version
    assert second.promoted is (second.challenger_version == best.version)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    assert str(client.get_model_version_by_alias("rec", "champion").version) == best.version

    with get_client(sync_client=True) as prefect:
        limit = prefect.read_global_concurrency_limit_by_name(steps.PROMOTION_LIMIT)
    assert limit.limit == 1 and limit.active and limit.active_slots == 0
