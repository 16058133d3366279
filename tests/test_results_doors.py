"""The tables and plots of every experiment read a results dict (what ``run()`` returned,
or ``json.load`` of its ``results.json``): a hand-edited, damaged or older one is one
ValidationError naming the function and the argument, never a raw KeyError, TypeError
or IndexError from inside."""
import pytest

from neuro_meta.errors import ValidationError
from neuro_meta.experiments import (bandit, consolidation, gradcheck, gradquality, omniglot,
                                    seeds, sinusoid, vsml)

# (owner, call(tmp_path, value)): every public reader of a results dict
READERS = [
    ("sinusoid.summary_table", lambda p, r: sinusoid.summary_table(r)),
    ("bandit.summary_table", lambda p, r: bandit.summary_table(r)),
    ("bandit.plot", lambda p, r: bandit.plot(p, r)),
    ("bandit.plot_meta", lambda p, r: bandit.plot_meta(p, r)),
    ("consolidation.summary_table", lambda p, r: consolidation.summary_table(r)),
    ("gradcheck.summary_table", lambda p, r: gradcheck.summary_table(r)),
    ("gradquality.summary_table", lambda p, r: gradquality.summary_table(r)),
    ("gradquality.plot", lambda p, r: gradquality.plot(p / "g.png", r)),
    ("seeds.summary_table", lambda p, r: seeds.summary_table(r)),
    ("seeds.plot", lambda p, r: seeds.plot(p / "s.png", r)),
    ("vsml.summary_table", lambda p, r: vsml.summary_table(r)),
    ("vsml.plot", lambda p, r: vsml.plot(r)),
    ("omniglot.summary_table", lambda p, r: omniglot.summary_table(r)),
    ("omniglot.plot", lambda p, r: omniglot.plot(p, r)),
    ("omniglot.seeds_table", lambda p, r: omniglot.seeds_table(r)),
    ("omniglot.plot_seeds", lambda p, r: omniglot.plot_seeds(p / "s.png", r)),
    ("omniglot.alphabets_table", lambda p, r: omniglot.alphabets_table(r)),
    ("omniglot.plot_alphabets", lambda p, r: omniglot.plot_alphabets(p / "a.png", r)),
]

MALFORMED = [
    {},
    {"methods": 3},
    {"methods": {"cml": {}}},
    {"methods": {"cml": {"accuracy": "x", "ci95": None}}},
    {"methods": {"cml": []}, "config": 3},
    {"config": {"family": "x"}, "seeds": "ab", "per_seed": [], "history": 1},
    {"results": [{}], "problems": {"a": 1}, "deploy": {}, "beta": []},
]


@pytest.mark.parametrize("owner, call", READERS, ids=[o for o, _ in READERS])
def test_not_a_mapping_is_one_validation_error(tmp_path, owner, call):
    with pytest.raises(ValidationError, match=rf"^{owner}\.\w+: must be .* \(a mapping, "
                       r"as the experiment returns it .*\(got list\)$"):
        call(tmp_path, [1, 2])


@pytest.mark.parametrize("owner, call", READERS, ids=[o for o, _ in READERS])
@pytest.mark.parametrize("value", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_results_are_one_validation_error(tmp_path, owner, call, value):
    """Each malformed dict is refused with a ValidationError that names the reader (or,
    if the reader finds nothing it needs missing, it returns): any other exception
    fails the test."""
    try:
        call(tmp_path, value)
    except ValidationError as err:
        assert str(err).startswith(owner + "."), err
        assert "\n" not in str(err), err
