"""Train / validation / test splits, materialised once, stored, verified and shared by every model.

A split is named by a :class:`SplitSpec` (``kind`` plus arguments, written ``kind:a=1,b=2``):

``random:test_ratio=0.1``
    seeded exact-ratio holdout: ``round(test_ratio * n)`` ratings, drawn by
    ``np.random.default_rng(seed).permutation(n)``, are the test set.
``d2l-random:test_ratio=0.1``
    the D2L book's ``split_data_ml100k(..., split_mode="random")``: each rating, independently, is
    train when ``np.random.RandomState(seed).uniform(0, 1, n) < 1 - test_ratio`` (rows in file
    order), so the test size is binomial, not exact.
``seq-aware``
    D2L's leave-latest-out: for each user, the rating with the latest timestamp is the test rating,
    the rest are train.  Ties (several ratings at the user's latest timestamp) go to the rating that
    comes first in file order, which is exactly what D2L's loop does (it replaces its candidate only
    on a strictly later timestamp).  A user with a single rating is therefore cold in train, as in D2L.
``canonical:u1`` (``u1`` .. ``u5``, ``ua``, ``ub``)
    MovieLens-100K's published ``uN.base`` / ``uN.test`` files, read from the dataset folder and
    mapped row by row onto the loaded ``u.data`` by (raw user, raw item).
``kfold:k=5,fold=0``
    ``np.random.default_rng(seed).permutation(n)`` cut into ``k`` near-equal folds
    (``np.array_split``); fold ``fold`` is test.  Every rating is in exactly one test fold.
``files:TRAIN.csv,TEST.csv``
    user-supplied CSVs with the header ``user,item,rating`` (raw integer ids; extra columns are
    ignored).  :func:`load_split` builds the ratings table as the union of both files, on the
    rating scale the caller declares (``rating_scale=(1, 5)``, CLI ``--rating-scale 1,5``) or a
    registered dataset's of the same name; an undeclared scale is refused unless the ratings fill
    a complete grid (:func:`autorec.data.scale_for`).

Validation is always a seeded share of the train part: ``round(valid_ratio * n_train)`` ratings
drawn by ``np.random.default_rng([seed, 1]).permutation(n_train)`` (a stream independent of the
test draw); the test part is never touched.  Every split is checked before it is used: the parts
are disjoint, in range and non-empty (train and test), and no test (user, item) pair occurs in
train or validation.

Each split has a SHA-256 (:func:`split_hash`) over a byte-exact encoding of its content, so the same
split hashes the same on every machine.  :func:`load_split` is the one entry point the harness and
every model use: it loads the data, materialises the split once, stores it as ``.npz`` under the
cache folder and, on reuse, verifies it against the stored hash (and against ``expect_sha256``, the
hash a parent process recorded).  The :class:`SplitData` it returns carries both content hashes: the
split's (``.split.sha256``) and the dataset's (``.ratings_sha256``).

The package, one job per module:

- :mod:`~autorec.splits.spec`: the grammar (:class:`SplitSpec`; ``to_dict`` / ``from_dict`` carry a
  parsed spec between processes as data);
- :mod:`~autorec.splits.strategies`: one function per kind (``STRATEGIES``) and :func:`make_split`;
- :mod:`~autorec.splits.split`: :class:`Split` and :class:`SplitData`;
- :mod:`~autorec.splits.hashing`: :func:`split_hash`, :func:`ratings_hash`, file hashes;
- :mod:`~autorec.splits.checks`: :func:`check_split` (disjoint, in range, no test pair leaking into
  train or validation);
- :mod:`~autorec.splits.files`: the ``files`` kind's CSVs (:func:`read_split_csv`,
  :func:`ratings_from_files`, whose rating scale is declared or refused) and row mapping;
- :mod:`~autorec.splits.store`: the on-disk store, :func:`load_split` / :func:`cached_split`.
"""

from autorec.splits.checks import check_split
from autorec.splits.files import ratings_from_files, read_split_csv
from autorec.splits.hashing import ratings_hash, split_hash
from autorec.splits.spec import CANONICAL_FOLDS, KINDS, SplitSpec
from autorec.splits.split import Split, SplitData
from autorec.splits.store import cache_path, cached_split, load_split
from autorec.splits.strategies import STRATEGIES, make_split

__all__ = [
    "KINDS",
    "CANONICAL_FOLDS",
    "STRATEGIES",
    "SplitSpec",
    "Split",
    "SplitData",
    "make_split",
    "load_split",
    "cached_split",
    "split_hash",
    "ratings_hash",
    "check_split",
    "read_split_csv",
    "ratings_from_files",
    "cache_path",
]
