"""The AL device pipeline equals sequential per-micro-batch AL (8 forced CPU devices), with
both engines (MPMD: per-device jitted stage steps; SPMD: one shard_map program)."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import _pipeline_toy as toy
from _al_pipeline import pipelined_and_sequential
from alearn.al import schedule
from alearn.al.pipeline import Pipeline, balance_blocks, group_blocks, make_mesh


def _close(got, want, rtol=1e-6, atol=1e-7):
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


def _run(stages, data=1, fill=np.nan, mode="auto", blocks_per_stage=None):
    """Trains the toy problem over toy.CALLS then flushes; bubbles filled with ``fill``."""
    states, (xs, ys) = toy.problem()
    pl = Pipeline([toy.step] * len(states), states, (xs[0], ys[0]), stages=stages, data=data,
                  mode=mode, blocks_per_stage=blocks_per_stage)
    pl.reset_pipeline(fill=fill)
    logs = [pl.train(xs[lo:hi], ys[lo:hi]) for lo, hi in toy.CALLS]
    logs.append(pl.flush(fill=fill))
    return pl, [lg for lg in logs if lg is not None], states, (xs, ys)


@pytest.fixture(scope="module")
def sequential():
    states, (xs, ys) = toy.problem()
    return toy.sequential(states, xs, ys)


@pytest.fixture(scope="module", params=list(itertools.product([1, 2, 4], ["mpmd", "spmd"])),
                ids=lambda p: f"{p[1]}{p[0]}")
def piped(request):
    stages, mode = request.param
    pl = _run(stages, mode=mode)
    assert pl[0].mode == mode
    return stages, pl


def test_pipeline_equals_sequential_al(piped, sequential):
    """Same params and Adam states as sequential AL, calls of n < N, = N, > N micro-batches,
    with NaN-filled bubble inputs (initial hand-overs and flush) that must never leak in."""
    _, (pl, _, _, _) = piped
    got = pl.block_states()
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(got))
    _close(got, sequential)


def test_schedule_ticks_and_work_items(piped):
    """n + N − 1 ticks in all; at global tick t stage s trains micro-batch t − s exactly."""
    n_stages, (pl, logs, _, _) = piped
    n = toy.CALLS[-1][1]
    sch = pl.schedule()
    assert sch.ticks == n + n_stages - 1
    assert sch.busy == (n,) * n_stages
    assert sch.utilisation == pytest.approx(n / (n + n_stages - 1))
    micro = np.concatenate([lg.micro for lg in logs], axis=1)
    ticks = np.arange(micro.shape[1])
    for s in range(n_stages):
        want = ticks - s
        want = np.where((want >= 0) & (want < n), want, -1)
        np.testing.assert_array_equal(micro[s], want)


def test_params_sharded_one_stage_per_device(piped):
    """Stage k's state lives on the k-th device of the stage axis, and only there (MPMD: the
    blocks' own pytrees, SPMD: row k of the packed buffers)."""
    n_stages, (pl, _, states, _) = piped
    if pl.mode == "mpmd":
        devices = jax.devices()[:n_stages]
        assert pl.engine.placement() == devices
        pl.engine.wait()
        for k, group in enumerate(pl.groups):
            leaves = jax.tree.leaves(pl.engine.states[k])
            assert leaves and all(a.devices() == {devices[k]} for a in leaves)
            assert len(pl.engine.states[k]) == len(group)
        if n_stages == 4:
            assert [pl.stage_of_block(b) for b in range(4)] == [0, 1, 2, 3]
        return
    eng = pl.engine
    devices = list(pl.mesh.devices.reshape(-1))
    for name, buf in eng.buffers.items():
        assert buf.sharding.spec == P("stage")
        assert len(buf.addressable_shards) == n_stages
        for shard in buf.addressable_shards:
            k = devices.index(shard.device)
            assert list(range(n_stages)[shard.index[0]]) == [k]
    # Stage k's rows unpack to exactly blocks groups[k] (block i on stage i for N = 4).
    host = pl.block_states()
    for k, group in enumerate(pl.groups):
        rows = {n: np.asarray(b.addressable_shards[k].data)[0] for n, b in eng.buffers.items()}
        _close(eng.stage_packers[k].unpack(rows), [host[b] for b in group], 0, 0)
    if n_stages == 4:
        assert [pl.stage_of_block(b) for b in range(4)] == [0, 1, 2, 3]


def test_bubbles_are_masked_not_just_zeroed(piped):
    """A bubble tick must leave the state unchanged: an all-bubble call changes nothing."""
    _, (pl, _, _, (xs, ys)) = piped
    counters = (pl._ticks, pl._busy.copy(), pl._fed)
    before = pl.block_states()
    log = pl._ticks_run(np.full_like(xs[:3], np.nan), np.full_like(ys[:3], np.nan),
                        np.zeros(3, bool))
    _close(pl.block_states(), before, 0, 0)
    assert not log.valid.any()
    pl._ticks, pl._busy, pl._fed = counters  # keep the fixture's schedule intact


def test_data_parallel_axis_matches_full_batch():
    """stage x data = 2 x 2: gradients averaged over the data shards equal full-batch AL."""
    pl, _, states, (xs, ys) = _run(2, data=2, fill=0.0)
    assert pl.mode == "spmd" and pl.mesh.axis_names == ("stage", "data")
    _close(pl.block_states(), toy.sequential(states, xs, ys), rtol=1e-5, atol=1e-6)


def test_bad_inputs_name_devices_and_blocks():
    with pytest.raises(ValueError, match=r"pipeline_stages=9 .*only 8 .*cpu:0.*cpu:7"):
        make_mesh(9)
    with pytest.raises(ValueError, match=r"needs 8 devices"):
        make_mesh(4, 2, jax.devices()[:6])
    names = ["block1", "block2", "block3", "block4"]
    with pytest.raises(ValueError, match=r"pipeline_stages=3 does not divide the 4 blocks "
                                         r"\(block1, block2, block3, block4\).*\(2, 1, 1\)"):
        group_blocks(names, 3)
    with pytest.raises(ValueError, match=r"pipeline_stages=5 exceeds the 4 blocks"):
        group_blocks(names, 5)
    with pytest.raises(ValueError, match=r"blocks_per_stage=\(2, 3\)"):
        group_blocks(names, 2, (2, 3))
    assert group_blocks(names, 3, (1, 2, 1)) == ((0,), (1, 2), (3,))
    assert group_blocks(names, 2) == ((0, 1), (2, 3))
    states, (xs, ys) = toy.problem()
    with pytest.raises(ValueError, match=r"unknown pipeline mode 'pp'; choose one of: auto, "
                                         r"mpmd, spmd"):
        Pipeline([toy.step] * 4, states, (xs[0], ys[0]), stages=2, mode="pp")
    with pytest.raises(ValueError, match=r"mode='mpmd' runs on one process with data=1; got "
                                         r"data=2"):
        Pipeline([toy.step] * 4, states, (xs[0], ys[0]), stages=2, data=2, mode="mpmd")
    with pytest.raises(ValueError, match=r"blocks_per_stage='fast': give counts or one of: "
                                         r"flops, time"):
        Pipeline([toy.step] * 4, states, (xs[0], ys[0]), stages=2, blocks_per_stage="fast")
    with pytest.raises(ValueError, match=r"pipeline_stages=2 x data=1 needs 2 devices, but "
                                         r"only 1 are available \(cpu:0\)"):
        Pipeline([toy.step] * 4, states, (xs[0], ys[0]), stages=2, mode="mpmd",
                 devices=jax.devices()[:1])


def _brute_force_split(costs, stages):
    """Oracle: the lightest heaviest stage over every contiguous split (enumerated)."""
    n = len(costs)
    best = None
    for cuts in itertools.combinations(range(1, n), stages - 1):
        bounds = (0, *cuts, n)
        heaviest = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
        best = heaviest if best is None else min(best, heaviest)
    return best


def test_balance_blocks_minimises_the_heaviest_stage():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(2, 8))
        stages = int(rng.integers(1, n + 1))
        costs = [float(c) for c in rng.integers(1, 20, n)]
        counts = balance_blocks(costs, stages)
        assert len(counts) == stages and min(counts) >= 1 and sum(counts) == n
        bounds = np.cumsum([0, *counts])
        got = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
        assert got == _brute_force_split(costs, stages), (costs, stages, counts)
    assert balance_blocks([8.0, 3.0, 5.0, 2.0], 2) == (1, 3)  # al_cnn-like: heavy block 1
    with pytest.raises(ValueError, match=r"cannot balance 2 blocks over pipeline_stages=3"):
        balance_blocks([1.0, 2.0], 3)


def test_flops_balanced_plan_runs_and_equals_sequential(sequential):
    """4 toy blocks on 3 stages grouped by XLA flops (the plan is the exact optimum of those
    costs), MPMD: still sequential AL exactly."""
    pl, _, _, _ = _run(3, mode="mpmd", blocks_per_stage="flops")
    plan = pl.plan
    assert plan.by == "flops" and all(c > 0 for c in plan.block_costs)
    assert plan.blocks_per_stage == balance_blocks(plan.block_costs, 3)
    assert pl.groups == tuple(tuple(g) for g in np.split(
        np.arange(4), np.cumsum(plan.blocks_per_stage)[:-1]))
    assert max(plan.stage_costs) == pytest.approx(_brute_force_split(plan.block_costs, 3))
    _close(pl.block_states(), sequential)


def test_schedule_model_and_measured_cost():
    sch = schedule.Schedule.ideal(12, 4)
    assert (sch.ticks, sch.utilisation) == (15, pytest.approx(12 / 15))
    m = schedule.modelled_makespan([1.0, 2.0, 1.0, 1.0], 12, bp_cost=6.0)
    assert m["sequential_al"] == 60 and m["pipeline"] == 30 and m["bp"] == 72
    assert m["speedup_vs_sequential_al"] == 2 and m["speedup_vs_bp"] == pytest.approx(2.4)
    a = jnp.ones((64, 64))
    cost = schedule.measure(lambda x: x @ x, a, reps=2)
    assert cost.flops == pytest.approx(2 * 64 ** 3, rel=0.01) and cost.seconds > 0


@pytest.mark.parametrize("data,mode", [(1, "mpmd"), (1, "spmd"), (2, "auto")])
def test_al_network_pipeline_equals_train_step(data, mode):
    """Real AL blocks (al_mlp, 2 blocks of different shapes, 2 stages, optionally 2 data
    devices each) through the trainer's PipelinedStep: same block states as the sequential
    whole-network AL step (data=2 also checks the rule layers' cotangent psum in shard_map),
    and each call's metrics are the previous tick's (block 1: micro-batch t − 1)."""
    import alearn.al as al

    net = al.create("al_mlp", 10, (6, 6, 1), width_multiplier=1 / 128, lr=1e-3)
    states = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(5, 4, 6, 6, 1)).astype(np.float32)
    labels = rng.integers(0, 10, (5, 4))
    cfg = {"pipeline_stages": 2, "pipeline_data": data, "batch_size": 4, "pipeline_mode": mode}
    step, got, got_metrics, ref, want_metrics = pipelined_and_sequential(
        net, states, cfg, xs, labels)
    assert step.pipeline.groups == ((0,), (1,))
    assert step.pipeline.mode == ("spmd" if data == 2 else mode)
    _close(got, ref, rtol=1e-5, atol=1e-6)
    assert got_metrics[0]["assoc_loss_1"] == 0.0  # nothing finished before the first call
    for t in range(1, len(xs)):
        np.testing.assert_allclose(got_metrics[t]["assoc_loss_1"],
                                   want_metrics[t - 1]["assoc_loss_1"], rtol=1e-5)
        if t >= 2:  # block 2 trails block 1 by one tick
            np.testing.assert_allclose(got_metrics[t]["ae_loss_2"],
                                       want_metrics[t - 2]["ae_loss_2"], rtol=1e-5)
    with pytest.raises(ValueError, match="fixed micro-batches of 4; got a batch of 3"):
        step(None, xs[0][:3], labels[0][:3])


def test_al_resnet_data_axis_synchronises_batch_norm():
    """A conv + BatchNorm residual AL net (al_resnet20's layers), 2 stages x 2 data devices:
    BatchNorm normalises with the whole micro-batch's statistics (synchronised over
    ``data``), so every block state equals the sequential AL step on the full batch. Before
    the fix each data device normalised with its own half (unsynchronised BN): running
    variances off by 0.13 on al_resnet20. SGD, not Adam: the biases of the convs that feed
    a BatchNorm get a gradient of pure rounding noise (BN cancels them), which Adam would
    scale up to ~lr in pipeline and sequential runs alike (also with data=1)."""
    import optax

    from alearn.al import models

    # al_resnet20 with one residual block per stage instead of 3 (compile time): conv+BN
    # stem, res blocks (BN, projection shortcuts), flatten bridges.
    net = models.network(models.resnet_spec(1, width_multiplier=1 / 16), 10, (4, 4, 3),
                         lr=0.05, optimizer=optax.sgd)
    states = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(2, 8, 4, 4, 3)).astype(np.float32) * 2 + 1
    labels = rng.integers(0, 10, (2, 8))
    cfg = {"pipeline_stages": 2, "pipeline_data": 2, "batch_size": 8}
    step, got, _, ref, _ = pipelined_and_sequential(net, states, cfg, xs, labels)
    assert step.pipeline.mode == "spmd" and step.pipeline.mesh.axis_names == ("stage", "data")
    flat_got = jax.tree_util.tree_flatten_with_path(got)[0]
    flat_ref = jax.tree.leaves(ref)
    assert len(flat_got) == len(flat_ref)
    assert any("batch_stats" in jax.tree_util.keystr(p) for p, _ in flat_got)
    for (path, g), w in zip(flat_got, flat_ref):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))


def test_data_axis_refuses_unsynchronisable_batch_norm():
    """A block whose f holds batch_stats but is not a Stack (its BatchNorm cannot be given
    the data axis) is refused with data > 1 instead of training on per-shard statistics."""
    import flax.linen as nn

    import alearn.al as al
    from alearn.al.pipeline.al import sync_batch_norm

    class Custom(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.BatchNorm(use_running_average=not train)(nn.Dense(3)(x))

    net = al.create("al_mlp", 10, (6, 6, 1), width_multiplier=1 / 128, lr=1e-3)
    bd = net.blocks[0]
    bn_state = {"f": {"batch_stats": {"BatchNorm_0": {"mean": np.zeros(3)}}}, "b": {}}
    synced = sync_batch_norm(bd, {"f": {}, "b": {}}, "data")
    assert synced.f.bn_axis_name == "data" and bd.f.bn_axis_name is None
    custom = dataclasses.replace(bd, f=Custom())
    assert sync_batch_norm(custom, {"f": {}, "b": {}}, "data").f is custom.f
    with pytest.raises(ValueError, match=r"block1: its f \(Custom\) has BatchNorm "
                                         r"batch_stats.*pipeline_data=1"):
        sync_batch_norm(custom, bn_state, "data")
