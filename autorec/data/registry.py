"""The MovieLens datasets the suite knows: where each comes from, how to check it, how to read it.

Checksums are the ones GroupLens publishes for the official zips (md5 for every release that has
one; ML-100K also has a published sha1).  ml-latest-small has no published checksum: it is verified
by its expected counts only (every dataset is, on load).
"""

from __future__ import annotations

from dataclasses import dataclass

from autorec.errors import DataError

__all__ = ["DEFAULT_BASE_URL", "DatasetSpec", "DATASETS", "get", "names", "FORMATS"]

#: where the official archives live; overridable by ``$AUTOREC_DATA_URL`` or a ``base_url`` argument
DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens/"

#: ratings file formats: ``tab`` (u.data: user TAB item TAB rating TAB timestamp), ``::``
#: (ratings.dat: user::item::rating::timestamp), ``csv`` (ratings.csv, with a header row)
FORMATS = ("tab", "::", "csv")

_NO_REDISTRIBUTION = (
    "research use only; may not be redistributed without separate permission from GroupLens; "
    "no commercial use without permission"
)
_SAME_TERMS = (
    "research use; may be redistributed (with transformations) only under these same license terms; "
    "no commercial use without permission"
)
CITATION = 'F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015'


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    ``checksums`` holds ``(algorithm, hex digest)`` pairs of the official archive (every one is
    verified); empty when none is published (then ``checksum_note`` says so).  ``archive_size`` is
    the archive's size in bytes when known.  ``folder`` is the folder the archive unpacks to,
    ``ratings_file`` the ratings file inside it, read as ``fmt``.  ``n_users`` / ``n_items`` /
    ``n_ratings`` are the expected counts (users, items with at least one rating, ratings);
    ``timestamps`` the release's first and last timestamp, where known.
    """

    name: str
    title: str
    archive: str
    folder: str
    ratings_file: str
    fmt: str
    rating_scale: tuple[float, float]
    step: float
    n_users: int
    n_items: int
    n_ratings: int
    license: str
    checksums: tuple[tuple[str, str], ...] = ()
    archive_size: int | None = None
    checksum_note: str = ""
    redistributable: bool = False
    #: the first and last timestamp of the release, checked on load where known (a line cut short
    #: in its timestamp parses, and the count check cannot see it)
    timestamps: tuple[int, int] | None = None

    @property
    def url(self) -> str:
        """The official GroupLens URL of the archive."""
        return self.url_for(None)

    def url_for(self, base_url: str | None) -> str:
        base = base_url or DEFAULT_BASE_URL
        return base.rstrip("/") + "/" + self.archive

    @property
    def scale(self) -> tuple[float, float]:
        return self.rating_scale

    @property
    def half_stars(self) -> bool:
        return self.step == 0.5

    @property
    def expected(self) -> tuple[int, int, int]:
        """``(n_users, n_items, n_ratings)``."""
        return (self.n_users, self.n_items, self.n_ratings)

    @property
    def size_mb(self) -> float | None:
        return None if self.archive_size is None else self.archive_size / 1e6

    def checksum(self, algorithm: str) -> str | None:
        return dict(self.checksums).get(algorithm)


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            name="ml-100k",
            title="MovieLens 100K (1998)",
            archive="ml-100k.zip",
            folder="ml-100k",
            ratings_file="u.data",
            fmt="tab",
            rating_scale=(1.0, 5.0),
            step=1.0,
            n_users=943,
            n_items=1682,
            n_ratings=100_000,
            license=_NO_REDISTRIBUTION,
            checksums=(
                ("md5", "0e33842e24a9c977be4e0107933c0723"),
                ("sha1", "cd4dcac4241c8a4ad7badc7ca635da8a69dddb83"),
            ),
            archive_size=4_924_029,
            timestamps=(874_724_710, 893_286_638),
        ),
        DatasetSpec(
            name="ml-1m",
            title="MovieLens 1M (2003)",
            archive="ml-1m.zip",
            folder="ml-1m",
            ratings_file="ratings.dat",
            fmt="::",
            rating_scale=(1.0, 5.0),
            step=1.0,
            n_users=6040,
            n_items=3706,
            n_ratings=1_000_209,
            license=_NO_REDISTRIBUTION,
            checksums=(("md5", "c4d9eecfca2ab87c1945afe126590906"),),
            archive_size=5_917_549,
        ),
        DatasetSpec(
            name="ml-10m",
            title="MovieLens 10M (2009)",
            archive="ml-10m.zip",
            folder="ml-10M100K",
            ratings_file="ratings.dat",
            fmt="::",
            rating_scale=(0.5, 5.0),
            step=0.5,
            n_users=69_878,
            n_items=10_677,
            n_ratings=10_000_054,
            license=_NO_REDISTRIBUTION,
            checksums=(("md5", "ce571fd55effeba0271552578f2648bd"),),
            checksum_note="archive size not published: verified by md5 and counts",
        ),
        DatasetSpec(
            name="ml-20m",
            title="MovieLens 20M (2015)",
            archive="ml-20m.zip",
            folder="ml-20m",
            ratings_file="ratings.csv",
            fmt="csv",
            rating_scale=(0.5, 5.0),
            step=0.5,
            n_users=138_493,
            n_items=26_744,
            n_ratings=20_000_263,
            license=_SAME_TERMS,
            checksums=(("md5", "cd245b17a1ae2cc31bb14903e1204af3"),),
            archive_size=198_702_078,
            redistributable=True,
        ),
        DatasetSpec(
            name="ml-25m",
            title="MovieLens 25M (2019)",
            archive="ml-25m.zip",
            folder="ml-25m",
            ratings_file="ratings.csv",
            fmt="csv",
            rating_scale=(0.5, 5.0),
            step=0.5,
            n_users=162_541,
            n_items=59_047,
            n_ratings=25_000_095,
            license=_SAME_TERMS,
            checksums=(("md5", "6b51fb2759a8657d3bfcbfc42b592ada"),),
            archive_size=261_978_986,
            redistributable=True,
        ),
        DatasetSpec(
            name="ml-latest-small",
            title="MovieLens latest-small (Sept 2018 release)",
            archive="ml-latest-small.zip",
            folder="ml-latest-small",
            ratings_file="ratings.csv",
            fmt="csv",
            rating_scale=(0.5, 5.0),
            step=0.5,
            n_users=610,
            n_items=9724,
            n_ratings=100_836,
            license=_SAME_TERMS,
            checksum_note="GroupLens publishes no checksum for this archive (and may re-release it): "
            "verified by its expected counts only",
            redistributable=True,
            timestamps=(828_124_615, 1_537_799_250),
        ),
    )
}

# other spellings accepted by get(): the folder an archive unpacks to
_ALIASES = {s.folder.lower(): s.name for s in DATASETS.values()}


def names() -> list[str]:
    return list(DATASETS)


def get(name: str | DatasetSpec) -> DatasetSpec:
    """The registered dataset ``name`` (also its archive folder name, e.g. ``ml-10M100K``)."""
    if isinstance(name, DatasetSpec):
        return name
    key = str(name).strip()
    spec = DATASETS.get(key) or DATASETS.get(_ALIASES.get(key.lower(), ""))
    if spec is None:
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)} "
            "(or load your own file with autorec.data.load_file / a 'files' split)"
        )
    return spec
