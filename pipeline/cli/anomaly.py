"""``trackflow anomaly``: the anomaly detectors, offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import SchemasDir

app = typer.Typer(help="Anomaly detectors, offline.", no_args_is_help=True)


@app.command("score")
def anomaly_score(
    input: Annotated[Path, typer.Option("--input", help="CSV with timestamp,value[,volume]")],
    output: Annotated[Path, typer.Option("--output", help="CSV to write (- for stdout)")],
    rule: Annotated[str | None, typer.Option("--rule", help="An alert rule's detector")] = None,
    detector: Annotated[
        str | None, typer.Option("--detector", help="threshold | relative_drop | adaptive")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Detector parameter NAME=VALUE")
    ] = None,
    sustain: Annotated[int, typer.Option(help="Anomalous points in a row to fire")] = 1,
    recover: Annotated[int, typer.Option(help="Normal points in a row to resolve")] = 3,
    schemas_dir: SchemasDir = None,
) -> None:
    """Score a recorded series with the detect stage's own code: timestamp,value,score,alert."""
    import orjson

    from pipeline.alerting.rules import RuleError, load_alert_rules
    from pipeline.alerting.scoring import ad_hoc_rule, score_csv

    if (rule is None) == (detector is None):
        typer.echo("trackflow anomaly score: give exactly one of --rule and --detector", err=True)
        raise typer.Exit(2)
    try:
        if rule is not None:
            rules = load_alert_rules(schemas_dir)
            if rule not in rules:
                raise RuleError(f"unknown rule {rule!r}; known: {', '.join(sorted(rules))}")
            chosen = rules[rule]
        else:
            params = {}
            for item in param or []:
                key, sep, raw = item.partition("=")
                if not sep:
                    raise RuleError(f"--param {item!r} is not NAME=VALUE")
                try:
                    params[key] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    params[key] = raw
            chosen = ad_hoc_rule(str(detector), params, sustain, recover)
            chosen.new_detector()
        with open(input, newline="") as src:
            if str(output) == "-":
                n = score_csv(chosen, src, sys.stdout)
            else:
                with open(output, "w", newline="") as dst:
                    n = score_csv(chosen, src, dst)
    except (RuleError, ValueError, TypeError, OSError) as exc:
        typer.echo(f"trackflow anomaly score: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"scored {n} rows", err=True)
