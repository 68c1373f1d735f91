"""Reading every source into :class:`~tasks.ingest.tables.RawTables`, then into a :class:`Dataset`.

:func:`load_raw` picks the loader for ``DataConfig.dataset``; :data:`SOURCES` describes each source in one
line (for the CLI's help). Loaders are imported when called, so importing this package reads nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.ingest.errors import DatasetNotAvailableError

if TYPE_CHECKING:
    from pathlib import Path

    from tasks.config import DataConfig
    from tasks.ingest.tables import RawTables

SOURCES: dict[str, str] = {
    "synthetic": "Seeded synthetic interactions with planted preferences; needs no files.",
    "movielens-100k": "MovieLens 100K ratings, user features, genre/year KG (downloaded if missing).",
    "lastfm-hetrec": "HetRec 2011 Last.fm 2K plays, friendships, tag KG (downloaded if missing).",
    "movielens-100k-kg": "RecBole's MovieLens 100K with the Freebase KG (.kg, .link; downloaded if missing).",
    "lastfm-kg": "KGCN's Last.fm (plays of KG-linked artists) with the Satori KG (downloaded if missing).",
    "filmtrust": "FilmTrust ratings and trust network (QRec's copy; downloaded if missing).",
    "recbole": "RecBole atomic files <name>.inter (+ .kg, .link, .net, .user, .item) in --data-dir.",
    "lightgcn": "LightGCN/SocialLGN fixed split train.txt/test.txt (data1/test1, train_set/test_set), trust.",
    "csv": "Your CSV files: interactions.csv (user,item[,rating][,timestamp]) + optional social/kg/features.",
}


def _local_dir(config: DataConfig) -> Path:
    if config.data_dir is None:
        raise DatasetNotAvailableError(
            f"The '{config.dataset}' source reads local files, but no folder was given: pass --data-dir "
            f"pointing at the folder that holds them."
        )
    return config.data_dir


def load_raw(config: DataConfig) -> RawTables:
    """Read the source named by ``config.dataset`` into raw tables (no validation, no indexing).

    Args:
        config: Which source, where its files are, and the source-specific options.

    Returns:
        The source's tables with raw ids, and the files they came from; ``rating_scale`` is
        ``config.rating_scale`` when given (the data contract then rejects ratings outside it).

    Raises:
        DatasetNotAvailableError: The files are missing (and, for downloadable sources, cannot be fetched).
        DataFormatError: A file cannot be parsed.
    """
    raw = _read_source(config)
    if config.rating_scale is not None:  # the user's declared scale replaces the source's own
        import dataclasses

        raw = dataclasses.replace(raw, rating_scale=config.rating_scale)
    return raw


def _read_source(config: DataConfig) -> RawTables:
    """The tables of ``config.dataset`` as its loader reads them."""
    dataset = config.dataset
    if dataset == "synthetic":
        from tasks.ingest.synthetic import make_synthetic

        return make_synthetic(
            num_users=config.synthetic_users,
            num_items=config.synthetic_items,
            num_interactions=config.synthetic_interactions,
            seed=config.synthetic_seed,
        )
    if dataset == "movielens-100k":
        from tasks.ingest.movielens import load_movielens_100k

        return load_movielens_100k(config.data_dir, download=config.download)
    if dataset == "lastfm-hetrec":
        from tasks.ingest.lastfm import load_lastfm_hetrec

        return load_lastfm_hetrec(config.data_dir, download=config.download)
    if dataset == "movielens-100k-kg":
        from tasks.ingest.kg_sources import load_movielens_100k_kg

        return load_movielens_100k_kg(config.data_dir, download=config.download)
    if dataset == "lastfm-kg":
        from tasks.ingest.kg_sources import load_lastfm_kg

        return load_lastfm_kg(config.data_dir, download=config.download)
    if dataset == "filmtrust":
        from tasks.ingest.filmtrust import load_filmtrust

        return load_filmtrust(config.data_dir, download=config.download)
    if dataset == "recbole":
        from tasks.ingest.recbole import load_recbole

        return load_recbole(_local_dir(config), config.recbole_name)
    if dataset == "lightgcn":
        from tasks.ingest.lightgcn import load_lightgcn

        return load_lightgcn(_local_dir(config), one_based=config.one_based)
    if dataset == "csv":
        from tasks.ingest.csv_source import load_csv

        return load_csv(_local_dir(config), columns=config.csv_columns, sep=config.csv_sep)
    raise ValueError(f"Unknown dataset {dataset!r}; choose one of {sorted(SOURCES)}.")
