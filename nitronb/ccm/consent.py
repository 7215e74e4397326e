"""Consent and its withdrawal: revoking an approved workflow version or whitelisting task, and
superseding older versions when a newer one is approved.

* Any approver of an APPROVED workflow version may withdraw its approval, with a reason: the
  version becomes REVOKED and its APPCONFIG_IDs are refused at provisioning from then on.
* When a version of a draft is approved, every older APPROVED version of that draft becomes
  SUPERSEDED (``superseded_by`` = the new version); a version approved after a newer one is
  superseded at once.
* The administrator may revoke an APPROVED whitelisting task, with a reason: a revoked
  BUILD_WHITELIST task refuses every enclave with that build's measurements (PCR0–2) whose build
  task was approved before the revocation; a revoked DOMAIN_WHITELIST task refuses the app's
  enclaves.

:meth:`ConsentVerbs.check_consent` is what provisioning asks, once before the attestation is
verified and again inside the transaction that releases the configuration, so that a release
never follows a withdrawal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nitronb.ccm import _checks as check
from nitronb.ccm.models import (APPROVED, REVOKED, SUPERSEDED, TASK_BUILD, Build, FinalWorkflow,
                                utc_now)
from nitronb.errors import ConflictError, PermissionDeniedError, ProvisioningRefusedError

if TYPE_CHECKING:
    from nitronb.ccm.models import AppConfig, User

#: the states of a final workflow version that once were APPROVED
WAS_APPROVED = (APPROVED, REVOKED, SUPERSEDED)


class ConsentVerbs:
    """Withdrawals and supersession (mixed into :class:`nitronb.ccm.service.Service`)."""

    # --- workflow versions ----------------------------------------------------------------------

    def revoke_workflow(self, user: "User", final_ref: str, reason: Any) -> dict[str, Any]:
        """An approver withdraws its approval of an APPROVED version (a final workflow id):
        the version becomes REVOKED. 404 for a version ``user`` may not see, 403 for a party
        that is not an approver, 409 unless the version is APPROVED, 422 for a bad reason."""

        reason = check.reason(reason, what="a withdrawal")
        with self.store.transaction():
            final = self._resolve("final_workflow", final_ref, what="final workflow", user=user)
            request = self.store.get("approval_request", final.approval_request_id)
            approvers = request.approvers if request else []
            if user.name not in approvers:
                raise PermissionDeniedError(
                    f"only an approver of workflow {final.name!r} version {final.version} "
                    f"({', '.join(approvers)}) may withdraw its approval; you are {user.name}.")
            if final.status != APPROVED:
                raise ConflictError(
                    f"workflow {final.name!r} version {final.version} is {final.status}; only "
                    "an APPROVED version can have its approval withdrawn.")
            final.status, final.revoked_by = REVOKED, user.name
            final.revoked_at, final.revoke_reason = utc_now(), reason
            self.store.put(final)
            self._audit(user.name, "workflow.revoke", final,
                        {"version": final.version, "reason": reason,
                         "app_config_ids": final.app_config_ids})
        return self._show_final(final)

    def _supersede(self, approved: FinalWorkflow, actor: str) -> None:
        """Inside the approving transaction: older APPROVED versions of ``approved``'s draft
        become SUPERSEDED; ``approved`` itself does if a newer version was approved before."""
        siblings = [f for f in self.store.find("final_workflow")
                    if f.draft_id == approved.draft_id and f.id != approved.id]
        newer = [f.version for f in siblings
                 if f.version > approved.version and f.status in WAS_APPROVED]
        if newer:
            stale = [approved]
            approved.superseded_by = max(newer)
        else:
            stale = [f for f in siblings if f.version < approved.version and f.status == APPROVED]
            for final in stale:
                final.superseded_by = approved.version
        for final in stale:
            final.status = SUPERSEDED
            self.store.put(final)
            self._audit(actor, "workflow.supersede", final,
                        {"version": final.version, "superseded_by": final.superseded_by})

    # --- whitelisting tasks -------------------------------------------------------------------

    def revoke_task(self, user: "User", task_id: str, reason: Any) -> dict[str, Any]:
        """Administrator only: revoke an APPROVED whitelisting task (409 otherwise)."""

        self._require_admin(user, "revoke whitelisting tasks")
        reason = check.reason(reason, what="a revocation")
        with self.store.transaction():
            task = self._resolve("task", task_id, user=user)
            if task.status != APPROVED:
                raise ConflictError(f"task {task.id} is {task.status}; only an APPROVED task "
                                    "can be revoked.")
            task.status, task.revoked_by = REVOKED, user.name
            task.revoked_at, task.revoke_reason = utc_now(), reason
            self.store.put(task)
            details: dict[str, Any] = {"type": task.task_type, "reason": reason}
            build = self.store.get("build", task.build_id) if task.build_id else None
            if build is not None:
                details["pcr0"] = build.measurements.get("pcr0")
            self._audit(user.name, "task.revoke", task, details)
        return task.to_dict()

    # --- provisioning -------------------------------------------------------------------------

    def check_consent(self, final_id: str, app_config: "AppConfig", build: Build) -> None:
        """Raise :class:`ProvisioningRefusedError` unless the version ``final_id`` is APPROVED
        and its app's domain and build tasks are approved and not revoked (read afresh)."""
        final = self.store.get("final_workflow", final_id)
        what = f"workflow {final.name!r} version {final.version} ({final.id})"
        if final.status == REVOKED:
            raise ProvisioningRefusedError(
                f"{what} was withdrawn by {final.revoked_by} at {final.revoked_at}: "
                f"{final.revoke_reason}", hint="Its parties approve a new version to run again.")
        if final.status == SUPERSEDED:
            running = [f.version for f in self.store.find("final_workflow")
                       if f.draft_id == final.draft_id and f.status == APPROVED]
            now = (f"version {max(running)} is the one that runs now" if running else
                   "no version of it runs now")
            raise ProvisioningRefusedError(
                f"{what} was superseded by version {final.superseded_by}; {now}.")
        if final.status != APPROVED:
            raise ProvisioningRefusedError(f"{what} is not approved: it is {final.status}.")
        app = self.store.get("app", app_config.app_id)
        for task_id, label in ((build.task_id, f"build task {build.task_id} ({build.image})"),
                               (app.domain_task_id,
                                f"domain task {app.domain_task_id} ({app.domain})")):
            task = self.store.get("task", task_id)
            if task is not None and task.status == REVOKED:
                raise ProvisioningRefusedError(
                    f"{label} was revoked by {task.revoked_by} at {task.revoked_at}: "
                    f"{task.revoke_reason}")
            if task is None or task.status != APPROVED:
                raise ProvisioningRefusedError(
                    f"{label} is {task.status if task else 'missing'}; an administrator must "
                    "approve it before the enclave can run.")
        self._refuse_revoked_measurements(build, self.store.get("task", build.task_id))

    def _refuse_revoked_measurements(self, build: Build, approved_task: Any) -> None:
        """Refuse ``build`` when another build with its PCRs had its task revoked after this
        build's task was approved."""
        pcrs = {k: build.measurements.get(k) for k in ("pcr0", "pcr1", "pcr2")}
        for task in self.store.find("task"):
            if task.task_type != TASK_BUILD or task.status != REVOKED or not task.build_id:
                continue
            other = self.store.get("build", task.build_id)
            if other is None or {k: other.measurements.get(k) for k in pcrs} != pcrs:
                continue
            if (task.revoked_at or "") >= (approved_task.decided_at or ""):
                raise ProvisioningRefusedError(
                    f"the measurements of build {build.id} were revoked by {task.revoked_by} at "
                    f"{task.revoked_at} (build task {task.id}): {task.revoke_reason}")


__all__ = ["ConsentVerbs", "WAS_APPROVED"]
