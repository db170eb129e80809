"""`mltrader sentiment`: measure the news-sentiment scorers on the bundled labelled tweets
(`eval`) and score texts by hand (`score`). Registers on `mltrader.cli_app.app` when imported
(cli.py imports it); the work is in `mltrader.features.sentiment`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mltrader.cli_app import app, guarded, out
from mltrader.errors import MltraderError

if TYPE_CHECKING:
    from mltrader.features.sentiment import ScorerResult

sentiment_app = typer.Typer(
    help="Sentiment of finance news text: four scorers (vader, textblob, lm = "
    "Loughran-McDonald, tfidf_lr = TF-IDF + logistic regression trained on the bundled set) "
    "and their measurement on 11,931 labelled finance tweets (bearish / neutral / bullish). "
    "Bands and the model are fit on the train split; results are on the validation split.",
    no_args_is_help=True,
    epilog="Examples:  mltrader sentiment eval  |  mltrader sentiment eval --scorer vader "
    "--scorer lm --json sentiment.json  |  mltrader sentiment score \"Apple beats estimates, "
    "shares jump\"",
)
app.add_typer(sentiment_app, name="sentiment")

ScorerOpt = Annotated[list[str] | None, typer.Option(
    "--scorer", "-s", help="A scorer to use (repeat for several; default: all): vader, "
    "textblob, lm, tfidf_lr. Example: --scorer vader --scorer tfidf_lr")]


def _band(r: ScorerResult) -> str:
    if r.band is None:
        return r.band_source
    return f"±{r.band:.4g} ({r.band_source})"


def _confusion(r: ScorerResult) -> Table:
    table = Table(title=f"{r.name}: rows true, columns predicted", title_justify="left")
    table.add_column("true \\ predicted")
    for lab in r.labels:
        table.add_column(lab, justify="right")
    for lab, row in zip(r.labels, r.confusion, strict=True):
        table.add_row(lab, *(str(v) for v in row))
    return table


@sentiment_app.command("eval", epilog="Examples:  mltrader sentiment eval  |  mltrader "
                       "sentiment eval --scorer lm --json lm.json  |  mltrader sentiment eval "
                       "--limit 300 (a quick look)")
@guarded
def sentiment_eval(
    scorer: ScorerOpt = None,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Also write every result (metrics, confusion matrix, band, seconds) "
        "to this JSON file. Example: --json sentiment.json")] = None,
    limit: Annotated[int | None, typer.Option(
        help="Evaluate a fixed random sample of N validation items instead of all of them "
        "(a quick check; the published numbers use all). Example: --limit 300")] = None,
) -> None:
    """Measure the scorers on the VALIDATION split of the bundled labelled tweets.

    Prints accuracy, macro-F1 (the mean of the three classes' F1: the figure to compare, as
    neutral dominates), the neutral band and the seconds per scorer, then each confusion
    matrix, next to the majority baseline (always the most frequent train label). Lexicon
    bands are VADER's own ±0.05 or fit on the train split; tfidf_lr is trained on the train
    split and picks the most probable class.
    """
    from mltrader.features.sentiment import evaluate

    results = evaluate(scorer, limit=limit)
    n = results[0].n
    counts = [sum(row) for row in results[0].confusion]
    sample = f" (a sample of {n}; --limit)" if limit is not None else ""
    per_label = ", ".join(f"{lab} {c}" for lab, c in zip(results[0].labels, counts, strict=True))
    out.print(f"Validation split of the bundled Twitter financial news set: {n} items{sample} "
              f"({per_label}); "
              "bands and model fit on the train split only.", highlight=False)
    table = Table(title="Sentiment scorers on the validation split", title_justify="left")
    for col in ("scorer", "accuracy", "macro-F1", "band", "seconds"):
        table.add_column(col, justify="left" if col in ("scorer", "band") else "right")
    for r in results:
        table.add_row(escape(r.name), f"{r.accuracy:.3f}", f"{r.macro_f1:.3f}",
                      escape(_band(r)), f"{r.seconds:.2f}")
    out.print(table)
    for r in results:
        out.print(_confusion(r))
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(
                {"split": "validation", "n": n, "limit": limit,
                 "results": [r.to_dict() for r in results]}, indent=2) + "\n")
        except OSError as e:
            raise MltraderError(f"cannot write {json_path}: {e.strerror or e}") from None
        out.print(f"Wrote {escape(str(json_path))}")


@sentiment_app.command("score", epilog="Examples:  mltrader sentiment score \"Apple beats "
                       "estimates, shares jump\" \"Bank faces lawsuit, stock plunges\"  |  "
                       "mltrader sentiment score --scorer lm \"Guidance cut on weak demand\"")
@guarded
def sentiment_score(
    texts: Annotated[list[str], typer.Argument(help="One or more texts to score (quote each). "
                                               "Example: \"Shares surge on record profit\"")],
    scorer: ScorerOpt = None,
) -> None:
    """Score texts with each scorer: a number in [-1, 1] (negative = bearish) and its label.

    The first use of a scorer fits its band or trains its model on the bundled train split
    (a few seconds).
    """
    from mltrader.features.sentiment import SCORERS, get_scorer
    from mltrader.features.sentiment.registry import check_names

    names = list(scorer) if scorer else list(SCORERS)
    check_names(names)
    table = Table(title="Sentiment scores (label by each scorer's band)", title_justify="left")
    table.add_column("text")
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    cells: list[list[str]] = [[escape(t)] for t in texts]
    for name in names:
        s = get_scorer(name)
        for row, v, lab in zip(cells, s.score(texts), s.classify(texts), strict=True):
            row.append(f"{v:+.3f} {lab}")
    for row in cells:
        table.add_row(*row)
    out.print(table)
