"""The agents app's django-q2 schedules (plain tuples: agents may not import workers)."""

SCHEDULES = [
    # A paused agent resumes when the calendar month turns (SPEC §24): audited once.
    ("resume-budgets-new-month", "agents.budget.resume_after_month_turn", "I", 1),
    ("prune-external-api-errors", "agents.external_errors.prune_api_errors", "H", None),
]
