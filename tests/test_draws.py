"""Each party's own stream of random draws: reproducible, apart from the global generator and from each other."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from fleettune.draws import DROPOUT_STREAM, PartyDraws, Role, global_rng_kept, party_draws, server_draws


def _draw(draws: PartyDraws, n: int = 4) -> torch.Tensor:
    with draws.drawing():
        return torch.rand(n)


def test_a_stream_is_the_generator_its_seed_gives() -> None:
    expected = torch.rand(6, generator=torch.Generator().manual_seed(42))
    draws = PartyDraws(42)
    assert torch.equal(torch.cat([_draw(draws, 2), _draw(draws, 4)]), expected)  # goes on where it stopped


def test_drawing_leaves_the_global_generator_where_it_was() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    _draw(PartyDraws(1), 100)
    assert torch.equal(torch.rand(3), expected)


def test_streams_do_not_depend_on_each_others_draws() -> None:
    alone = _draw(PartyDraws(5), 8)
    other, mine = PartyDraws(6), PartyDraws(5)
    _draw(other, 3)
    first = _draw(mine, 4)
    _draw(other, 50)
    assert torch.equal(torch.cat([first, _draw(mine, 4)]), alone)


def test_dropout_inside_draws_from_the_party_stream() -> None:
    layer = torch.nn.Dropout(0.5).train()
    with PartyDraws(3).drawing():
        mask = layer(torch.ones(64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        expected = layer(torch.ones(64))
    assert torch.equal(mask, expected)


def test_party_seeds_come_from_the_run_seed_role_and_index() -> None:
    seed = int(np.random.default_rng([11, DROPOUT_STREAM, int(Role.SERVER), 2]).integers(2**62))
    assert torch.equal(_draw(party_draws(11, Role.SERVER, 2)), _draw(PartyDraws(seed)))
    draws = [_draw(party_draws(11, role, index)) for role in Role for index in range(3)]
    assert len({tuple(d.tolist()) for d in draws}) == len(draws)  # every party its own stream
    servers = server_draws(11, ["a", "b", "c"])
    assert torch.equal(_draw(servers["c"]), _draw(party_draws(11, Role.SERVER, 2)))


def test_global_rng_kept_seeds_inside_and_restores_after() -> None:
    torch.manual_seed(0)
    expected_after = torch.rand(2)
    torch.manual_seed(0)
    with global_rng_kept(9):
        inside = torch.rand(2)
    assert torch.equal(inside, torch.rand(2, generator=torch.Generator().manual_seed(9)))
    assert torch.equal(torch.rand(2), expected_after)


def test_threads_drawing_at_once_keep_to_their_own_streams() -> None:
    """Parties computing in threads of one process (an in-process deployment) take turns on the global generator."""
    seeds = [21, 22, 23, 24]
    expected = {s: torch.rand(200 * 8, generator=torch.Generator().manual_seed(s)) for s in seeds}
    got: dict[int, list[torch.Tensor]] = {s: [] for s in seeds}

    def party(seed: int) -> None:
        draws = PartyDraws(seed)
        for _ in range(200):
            with draws.drawing():
                first = torch.rand(4)
                time.sleep(0.0005)  # lets the other threads run mid-computation, as a forward pass would
                got[seed].append(torch.cat([first, torch.rand(4)]))

    threads = [threading.Thread(target=party, args=(s,)) for s in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in seeds:
        assert torch.equal(torch.cat(got[seed]), expected[seed])
