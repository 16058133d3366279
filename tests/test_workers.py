"""Worker processes for meta-batches (:mod:`neuro_meta.workers`) and the baselines'
chunked meta-gradients: where each piece runs, the workers' BLAS threads, and the same
numbers on any executor."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import neuro_meta as nm
from neuro_meta import optim
from neuro_meta.baselines import (ANIL, IMAML, MAML, Reptile, chunked_meta_gradient, init_mlp,
                                  train_baseline)
from neuro_meta.families import Sinusoid
from neuro_meta.workers import PieceExecutor, blas_threads, map_pieces, n_workers


def _pid_and(x):
    return os.getpid(), x * x


def _blas_threads():
    from threadpoolctl import threadpool_info

    return sorted({d["num_threads"] for d in threadpool_info()})


@pytest.fixture(scope="module")
def pool():
    with PieceExecutor(2) as ex:
        yield ex


def test_piece_executor_computes_the_first_piece_here_the_rest_on_its_pool(pool):
    out = map_pieces(_pid_and, [(k,) for k in range(5)], pool)
    assert [v for _, v in out] == [0, 1, 4, 9, 16]          # in the order of the pieces
    assert out[0][0] == os.getpid()
    assert all(pid != os.getpid() for pid, _ in out[1:])
    assert n_workers(pool) == 2 and n_workers(None) == 1
    with ThreadPoolExecutor(3) as ex:                        # a plain executor gets all
        assert n_workers(ex) == 3
        assert [v for _, v in map_pieces(_pid_and, [(2,), (3,)], ex)] == [4, 9]
    assert map_pieces(_pid_and, [(3,)], None) == [(os.getpid(), 9)]


def test_pool_workers_use_one_blas_thread(pool):
    assert pool.submit(_blas_threads).result() == [1]
    with blas_threads(1):
        assert _blas_threads() == [1]


@pytest.mark.parametrize("bad", [0, 1, 2.5, "2"])
def test_piece_executor_needs_two_workers_or_more(bad):
    with pytest.raises(nm.ValidationError, match=r"PieceExecutor\.workers"):
        PieceExecutor(bad)


def test_no_more_worker_processes_than_four_per_cpu(tmp_path, capsys, monkeypatch):
    """A mistyped worker count is refused before any process starts (a fork of 10⁶
    processes otherwise): in the pool, the piece executor, a local Dask cluster, the
    command line and an Omniglot run's compare.workers when it starts that many."""
    import os

    from neuro_meta import cli
    from neuro_meta.workers import local_cluster, max_local_workers, process_pool

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert max_local_workers() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert max_local_workers() == 24
    cap = max_local_workers()
    rule = rf"must be <= {cap} \(4 worker processes per CPU of this machine's 6, "
    for make, owner in ((process_pool, "process_pool"), (PieceExecutor, "PieceExecutor"),
                        (lambda n: local_cluster(n).__enter__(), "local_cluster")):
        with pytest.raises(nm.ValidationError, match=rf"^{owner}\.workers: {rule}.*"
                           rf"\(got {cap + 1}\)$"):
            make(cap + 1)
    assert cli.main(["run", "sinusoid", "--quick", "--no-progress", "--executor",
                     "processes", "--workers", "1000000", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("neuro-meta: error: neuro-meta run.--workers: must be <= 24 "), err
    assert cli.main(["run", "omniglot", "--quick", "--no-progress", "--set",
                     "compare.workers=25", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compare.workers: must be <= 24" in err, err
    # compare.workers is a number of pieces too: a run's configuration that asks for more
    # pieces than this machine starts processes is read (serial scoring, a remote
    # cluster), and --workers is not capped for a remote scheduler's cluster
    from neuro_meta.experiments import omniglot
    cfg = omniglot._cfg(overrides=["compare.workers=25"])
    assert omniglot.compare_cfg(cfg)["workers"] == 25


@pytest.mark.parametrize("call, attr", [
    (lambda: map_pieces(5, [(1,)]), "fn"),
    (lambda: map_pieces(abs, 5), "pieces"),
    (lambda: map_pieces(abs, [1, 2]), "pieces"),
    (lambda: map_pieces(abs, [(1,)], executor=5), "executor"),
], ids=["fn", "pieces", "piece", "executor"])
def test_map_pieces_checks_its_arguments(call, attr):
    """Bare TypeError/AttributeError from inside before."""
    with pytest.raises(nm.ValidationError, match=rf"^map_pieces\.{attr}: must .*\(got "):
        call()
    assert map_pieces(abs, [(-1,), (2,)]) == [1, 2]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(4)
    params = init_mlp([1, 6, 6, 1], seed=2)
    return params, Sinusoid(shots=5, val=6).sample(rng, 7)


METHODS = [MAML(0.1, 3), MAML(0.1, 3, first_order=True), IMAML(lam=1.0, inner_lr=0.05,
                                                                inner_steps=4),
           Reptile(0.05, 4, inner_set="all", inner_batch=3, seed=1), ANIL(0.3, 3)]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_chunked_meta_gradient_is_the_task_weighted_mean(problem, pool, method):
    """Pieces of 3, 2 and 2 tasks recombine to the one-piece meta-gradient (to rounding);
    in-process and on the pool the very same numbers."""
    params, task = problem
    g1, l1 = method.meta_gradient(params, task)
    g3, l3 = chunked_meta_gradient(method, params, task, chunks=3)
    assert np.allclose(optim.tree_vector(g3), optim.tree_vector(g1), rtol=1e-12,
                       atol=1e-14 * np.abs(optim.tree_vector(g1)).max())
    assert l3 == pytest.approx(l1, rel=1e-13)
    gp, lp = chunked_meta_gradient(method, params, task, chunks=3, executor=pool)
    np.testing.assert_array_equal(optim.tree_vector(gp), optim.tree_vector(g3))
    assert lp == l3
    # a piece per task at most
    g9, _ = chunked_meta_gradient(method, params, task, chunks=9)
    assert np.allclose(optim.tree_vector(g9), optim.tree_vector(g1), rtol=1e-12,
                       atol=1e-14 * np.abs(optim.tree_vector(g1)).max())


@pytest.mark.parametrize("kw, match", [
    (dict(task="task"), r"chunked_meta_gradient\.task: must be a Task \(got str\)"),
    (dict(chunks="2"), r"chunked_meta_gradient\.chunks: must be an integer"),
    (dict(chunks=0), r"chunked_meta_gradient\.chunks: must be >= 1 \(got 0\)"),
    (dict(method="maml"), r"chunked_meta_gradient\.method: must have a meta_gradient"),
    (dict(executor=object()), r"chunked_meta_gradient\.executor: must be None or have a "
                              r"submit"),
])
def test_chunked_meta_gradient_checks_its_arguments(problem, kw, match):
    """Before: a raw AttributeError or TypeError from deep inside."""
    params, task = problem
    args = dict(method=METHODS[0], params=params, task=task, chunks=2, executor=None)
    args.update(kw)
    with pytest.raises(nm.ValidationError, match=match):
        chunked_meta_gradient(**args)


def test_train_baseline_same_numbers_on_any_executor(problem, pool):
    params, _ = problem
    fam = Sinusoid(shots=5, val=6)
    kw = dict(meta_batch=4, seed=3, eval_every=2, eval_tasks=5, progress=False,
              optimizer=optim.adam(1e-2), chunks=2)
    a, ha = train_baseline(MAML(0.1, 2), params, fam, 4, **kw)
    b, hb = train_baseline(MAML(0.1, 2), params, fam, 4, executor=pool, **kw)
    np.testing.assert_array_equal(optim.tree_vector(a), optim.tree_vector(b))
    assert ha["meta_val_mse"] == hb["meta_val_mse"]
    with pytest.raises(nm.ValidationError, match=r"train_baseline\.chunks"):
        train_baseline(MAML(0.1, 2), params, fam, 1, **dict(kw, chunks=0))


def test_local_cluster_leaves_this_environment_and_no_trim_threshold_on_workers():
    """Dask's nannies write MALLOC_TRIM_THRESHOLD_ and BLAS thread counts into the parent's
    environment; ``local_cluster`` restores it, and its workers run with one BLAS thread
    but without the trim threshold (which made numpy work 1.8x slower on them)."""
    import os

    pytest.importorskip("dask.distributed")
    from neuro_meta.workers import local_cluster

    before = dict(os.environ)
    with local_cluster(2) as client:
        assert dict(os.environ) == before
        env = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                                  os.environ.get("OMP_NUM_THREADS")))
        assert len(env) == 2
        assert all(v == (before.get("MALLOC_TRIM_THRESHOLD_"), "1") for v in env.values())
        client.restart()        # the nannies start new workers, writing here again
        env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        assert list(env.values()) == [before.get("MALLOC_TRIM_THRESHOLD_")] * 2
    assert dict(os.environ) == before
    with pytest.raises(nm.ValidationError, match="local_cluster.workers: must be >= 1"):
        with local_cluster(0):
            pass
