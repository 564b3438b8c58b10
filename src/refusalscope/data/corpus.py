"""Plain text streamed from a Hugging Face dataset (the feature cards' extra corpus)."""

from __future__ import annotations

import itertools
import logging

from ..runtime.errors import RefusalScopeError

log = logging.getLogger(__name__)


def check_datasets_installed() -> None:
    """Raise before any loading when a corpus dataset is asked for without `datasets`."""
    try:
        import datasets  # noqa: F401
    except ImportError as e:
        raise RefusalScopeError(
            "explain.corpus_dataset needs the `datasets` package: pip install datasets"
        ) from e


def stream_texts(name: str, config: str | None, split: str, text_field: str, n: int) -> list[str]:
    """The first ``n`` non-empty ``text_field`` values of a dataset, streamed (nothing
    but those rows is downloaded). ``name`` is a hub id or a local dataset folder/file
    as ``datasets.load_dataset`` takes it."""
    check_datasets_installed()
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        rows = itertools.islice((r for r in ds if _text(r, text_field, name).strip()), n)
        texts = [_text(r, text_field, name) for r in rows]
    except RefusalScopeError:
        raise
    except Exception as e:  # datasets raises many types for a bad name, split or config
        raise RefusalScopeError(
            f"could not stream explain.corpus_dataset {name!r} (config {config!r}, split "
            f"{split!r}): {type(e).__name__}: {e}. Check the name, explain.corpus_config and "
            "explain.corpus_split, or set explain.corpus_dataset = null"
        ) from e
    if not texts:
        raise RefusalScopeError(
            f"explain.corpus_dataset {name!r} gave no non-empty {text_field!r} rows"
        )
    log.info("corpus: %d passages from %s", len(texts), name)
    return texts


def _text(row: dict, field: str, name: str) -> str:
    if field not in row:
        raise RefusalScopeError(
            f"explain.corpus_dataset {name!r} has no column {field!r} (columns: "
            f"{', '.join(sorted(row))}); set explain.corpus_field"
        )
    value = row[field]
    return value if isinstance(value, str) else str(value)
