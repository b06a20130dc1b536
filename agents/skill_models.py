"""Global skills (SPEC §13): a skill, its immutable published versions, and the release
that is active per channel."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class GlobalSkill(models.Model):
    """A skill every agent workspace receives, released per channel (SPEC §13)."""

    STATUS_CHOICES = [("active", "active"), ("disabled", "disabled")]

    slug = models.CharField(max_length=128, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default="active")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class GlobalSkillVersion(models.Model):
    """An immutable bundle: files with their hashes, and the bundle hash over them."""

    FORMAT_CHOICES = [("esm", "esm"), ("cjs", "cjs")]

    skill = models.ForeignKey(GlobalSkill, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=64)
    module_format = models.CharField(max_length=3, choices=FORMAT_CHOICES, default="esm")
    entry_point = models.CharField(max_length=200, default="default")
    files = models.JSONField()
    bundle_sha256 = models.CharField(max_length=64)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["skill", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["skill", "version"], name="skill_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.skill.slug}@{self.version}"


class GlobalSkillRelease(models.Model):
    CHANNEL_CHOICES = [("stable", "stable"), ("canary", "canary")]

    skill = models.ForeignKey(GlobalSkill, on_delete=models.CASCADE, related_name="releases")
    version = models.ForeignKey(GlobalSkillVersion, on_delete=models.PROTECT, related_name="+")
    channel = models.CharField(max_length=10, choices=CHANNEL_CHOICES, default="stable")
    active = models.BooleanField(default=True)
    activated_by = models.CharField(max_length=150, blank=True)
    activated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-activated_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["skill", "channel"],
                condition=models.Q(active=True),
                name="skill_one_active_release_per_channel",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} on {self.channel}"
