"""Month-to-date spend per agent and in total (SPEC §24 budget cap): a denormalised counter
raised with each attempt's cost, so checking a cap is one indexed read, never a SUM."""

from __future__ import annotations

from django.db import models


class MonthlySpend(models.Model):
    """The estimated cost (USD) spent in one calendar month (UTC) by one agent, or by all
    agents together (``scope`` = ""), with the month's warning and pause marks that make
    their audit rows appear once."""

    GLOBAL = ""

    scope = models.CharField(
        max_length=64, blank=True, help_text="Agent key; empty for the global total."
    )
    month = models.DateField(help_text="First day of the calendar month (UTC).")
    cost_usd = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    warned_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "agents"
        ordering = ["-month", "scope"]
        verbose_name = "monthly spend"
        verbose_name_plural = "monthly spend"
        constraints = [
            models.UniqueConstraint(fields=["scope", "month"], name="spend_scope_month_unique")
        ]

    def __str__(self) -> str:
        return f"{self.scope or 'all agents'} {self.month:%Y-%m}: ${self.cost_usd}"
