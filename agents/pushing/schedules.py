"""The pushing app's django-q2 schedules (assembled by ``config/schedules.py``).

Every minute: slots are HH:mm, so an hourly dispatcher would send 08:30 at 09:00. Plain
data, no imports: config reads it without loading any app code.
"""

SCHEDULES = [
    ("dispatch-push-jobs", "agents.pushing.dispatch.run_scheduled", "I", 1),
]
