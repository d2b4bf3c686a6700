"""Hand-built analysis results that other analyses read (e.g. svd's claims read the domains result)."""

from flowroutes import report
from flowroutes.analyses.rows import table_from_columns


def domains_result(specific, tokens_by_domain) -> report.Result:
    """A domains Result with `specific_heads` and a table of the tokens of each domain's texts."""
    cols = {"domain": [], "token": []}
    for domain, tokens in tokens_by_domain.items():
        cols["domain"] += [domain] * len(tokens)
        cols["token"] += tokens
    return report.Result("domains", "d", "", table_from_columns(cols), data={"specific_heads": specific})
