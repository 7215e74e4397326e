"""The manager's rules: who may create, see, approve and receive what.

Every verb takes the acting :class:`User` first (provisioning takes an attestation instead) and
returns plain JSON-ready dicts. The HTTP layer only translates; nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

from nitronb._files import write_atomic
from nitronb.ccm import _checks as check
from nitronb.ccm import audit
from nitronb.ccm.consent import ConsentVerbs
from nitronb.ccm.folder import folder_lock, manager_key
from nitronb.ccm.models import (APPROVED, DENIED, PARTIES, PENDING, ROLE_ADMIN, ROLE_USER,
                                TASK_BUILD, TASK_DOMAIN, App, AppConfig, Build, Dataset, Record,
                                Task, User, utc_now)
from nitronb.ccm.provisioning import AttestationVerifier, ProvisioningVerbs
from nitronb.ccm.store import Store
from nitronb.ccm.visibility import Scope, scope_for
from nitronb.ccm.workflows import WorkflowVerbs
from nitronb.errors import (AuthenticationError, ConflictError, NotFoundError,
                            PermissionDeniedError, ValidationError)

MAX_AUDIT_LIMIT = 100_000  # rows one audit request may ask for

_TOKEN_PREFIX = "nbt_"


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Service(WorkflowVerbs, ProvisioningVerbs, ConsentVerbs):
    """The manager: state in ``store``, dataset credentials sealed with ``manager_key``.

    Reads follow need to know (:mod:`nitronb.ccm.visibility`): an object a user may not see is
    answered 404, as if it did not exist."""

    def __init__(self, store: Store, manager_key: str,
                 verifier: AttestationVerifier | None = None) -> None:
        self.store = store
        self._manager_key = manager_key
        self.verifier = verifier

    # --- opening a workspace ------------------------------------------------------------------

    @classmethod
    def open(cls, workspace: str | Path, verifier: AttestationVerifier | None = None, *,
             database_url: str | None = None) -> "Service":
        """The manager of ``workspace``: creates ``ccm/`` (manager key, the four parties and
        ``tokens.json``) on first use; later opens keep all of it. Its database is
        ``database_url``, else ``$NITRONB_DATABASE_URL``, else ``ccm/ccm.sqlite3``
        (:func:`nitronb.ccm.database.database_url`). Safe when several managers open one
        workspace and database at once. Raises :class:`ManagerDatabaseError` when the database
        cannot be opened, or holds secrets sealed with another manager key."""
        from nitronb.ccm.database import database_url as resolve
        from nitronb.workspace import private_dir

        folder = private_dir(Path(workspace) / "ccm")
        store = Store(resolve(database_url, folder=folder))
        try:
            with folder_lock(folder):  # one manager of this folder at a time sets it up
                service = cls(store, manager_key(folder, store), verifier)
                service.ensure_parties(folder / "tokens.json")
        except BaseException:
            store.close()
            raise
        return service

    def ensure_parties(self, tokens_path: Path) -> dict[str, str]:
        """Create the four parties if missing; keep (or reissue) their tokens in ``tokens_path``."""
        changed = False
        with self.store.transaction():
            try:
                tokens = json.loads(tokens_path.read_text("utf-8")) if tokens_path.exists() \
                    else {}
            except ValueError:
                tokens = {}
            for party in PARTIES:
                user = self._user_by_name(party)
                if user is None:
                    roles = [ROLE_ADMIN, ROLE_USER] if party == "admin" else [ROLE_USER]
                    user = User(id=str(uuid.uuid4()), owner=party, created_at=utc_now(),
                                name=party, roles=roles)
                    self.store.put(user)
                    self._audit("system", "user.create", user, {"roles": roles})
                token = tokens.get(party)
                if not token or self.store.user_for_token(_hash_token(token)) != user.id:
                    token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
                    self.store.set_token(_hash_token(token), user.id)
                    tokens[party] = token
                    changed = True
            if changed or not tokens_path.exists():  # before the commit: the file and the
                # database name the same tokens whichever manager commits last
                write_atomic(tokens_path, (json.dumps(tokens, indent=2) + "\n").encode())
        os.chmod(tokens_path, 0o600)
        return tokens

    # --- helpers ------------------------------------------------------------------------------

    def _audit(self, actor: str, action: str, record: Record | None = None,
               details: dict[str, Any] | None = None, *, object_type: str | None = None,
               object_id: str | None = None) -> None:
        audit.append(self.store, at=utc_now(), actor=actor, action=action,
                     object_type=object_type or (record.kind if record else ""),
                     object_id=object_id or (record.id if record else ""), details=details)

    def _user_by_name(self, name: str) -> User | None:
        found = self.store.find("user", name=name)
        return found[0] if found else None  # type: ignore[return-value]

    def _scope(self, user: User) -> Scope:
        return scope_for(self.store, user)

    def _resolve(self, kind: str, ref: Any, *, what: str | None = None,
                 user: User | None = None) -> Any:
        """The record of ``kind`` whose id, or else unique name, is ``ref`` (404 otherwise);
        with ``user``, only among the records that user may see."""
        what = what or kind.replace("_", " ")
        if not isinstance(ref, str) or not ref:
            raise ValidationError(f"a {what} id or name is required.")
        check.unicode_text(ref, f"the {what} id or name")
        scope = self._scope(user) if user is not None and not user.is_admin else None
        record = self.store.get(kind, ref)
        if record is not None and (scope is None or scope.sees(kind, record.id)):
            return record
        named = self.store.find(kind, name=ref)
        if scope is not None:
            named = scope.only(kind, named)
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise ConflictError(f"{len(named)} {what}s are named {ref!r}; use the id.")
        raise NotFoundError(f"no {what} {ref!r}.", hint=f"List them with `nitronb ccm --as PARTY list {kind}s`."
                            if kind in ("dataset", "app", "build", "task") else None)

    def _unique_name(self, kind: str, name: str) -> None:
        if self.store.find(kind, name=name):
            raise ConflictError(f"a {kind.replace('_', ' ')} named {name!r} already exists.",
                                hint="Choose another name.")

    @staticmethod
    def _require_admin(user: User, doing: str) -> None:
        if not user.is_admin:
            raise PermissionDeniedError(f"only an administrator may {doing}; "
                                        f"{user.name} is not one.")

    @staticmethod
    def _require_owner(user: User, record: Record, doing: str) -> None:
        if record.owner != user.name:
            raise PermissionDeniedError(
                f"only the owner of {record.kind.replace('_', ' ')} {getattr(record, 'name', '') or record.id} "
                f"({record.owner}) may {doing}; you are {user.name}.")

    # --- users and authentication ---------------------------------------------------------

    def authenticate(self, token: str | None) -> User:
        """The user holding ``token``; AuthenticationError when missing or unknown."""
        if not token:
            raise AuthenticationError("no bearer token: send 'Authorization: Bearer TOKEN'.",
                                      hint="Tokens of the local parties are in "
                                           "<workspace>/ccm/tokens.json.")
        user_id = self.store.user_for_token(_hash_token(token))
        user = self.store.get("user", user_id) if user_id else None
        if user is None:
            raise AuthenticationError("unknown or revoked token.",
                                      hint="Check the token, or ask the administrator for one.")
        return user  # type: ignore[return-value]

    def whoami(self, user: User) -> dict[str, Any]:
        return {"user": user.to_dict()}

    def list_users(self, user: User) -> list[dict[str, Any]]:
        return [u.to_dict() for u in self.store.find("user")]

    def create_user(self, user: User, payload: dict[str, Any]) -> dict[str, Any]:
        """Admin only: a new user; the response carries its token, shown this once."""
        self._require_admin(user, "create users")
        payload = check.body(payload)
        name = check.text(payload, "name", limit=64)
        roles = payload.get("roles") or [ROLE_USER]
        if not isinstance(roles, list) or not all(role in (ROLE_ADMIN, ROLE_USER)
                                                  for role in roles):
            raise ValidationError("'roles' must be a list of 'user' and 'admin'.")
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.store.transaction():
            self._unique_name("user", name)
            new = User(id=str(uuid.uuid4()), owner=name, created_at=utc_now(), name=name,
                       roles=sorted(set(roles) | {ROLE_USER}))
            self.store.put(new)
            self.store.set_token(_hash_token(token), new.id)
            self._audit(user.name, "user.create", new, {"roles": new.roles})
        return {**new.to_dict(), "token": token}

    # --- datasets -----------------------------------------------------------------------------

    def _seal(self, value: dict[str, Any]) -> bytes:
        from nitronb.crypto import encrypt_bytes

        return encrypt_bytes(self._manager_key, json.dumps(value).encode("utf-8"))

    def dataset_credentials(self, dataset_id: str) -> dict[str, Any]:
        """The decrypted credentials of a dataset: for provisioning only, never served to users."""
        from nitronb.crypto import decrypt_bytes

        sealed = self.store.get_secret(dataset_id)
        if sealed is None:
            raise NotFoundError(f"dataset {dataset_id} has no credentials.")
        return json.loads(decrypt_bytes(self._manager_key, sealed,
                                        name=f"the credentials of dataset {dataset_id}"))

    def _show_dataset(self, dataset: Dataset) -> dict[str, Any]:
        out = dataset.to_dict()
        out["credentials"] = self._redacted_credentials(dataset.id)
        return out

    def create_dataset(self, user: User, payload: dict[str, Any]) -> dict[str, Any]:
        """A dataset owned by ``user`` (DESIGN §2.4); its credentials are sealed at rest."""
        payload = check.body(payload)
        name = check.folder_name(payload)
        dataset = Dataset(
            id=str(uuid.uuid4()), owner=user.name, created_at=utc_now(), name=name,
            description=check.text(payload, "description", required=False, limit=1024,
                                   multiline=True),
            labels=check.labels(payload),
            location=check.location(check.text(payload, "location", limit=2048)),
            long_description=check.text(payload, "long_description", required=False,
                                        limit=200_000, multiline=True),
        )
        creds = check.credentials(payload.get("credentials"))
        with self.store.transaction():
            self._unique_name("dataset", name)
            self.store.put(dataset)
            self.store.put_secret(dataset.id, self._seal(creds))
            self._audit(user.name, "dataset.create", dataset, {"name": name})
        return self._show_dataset(dataset)

    def update_dataset(self, user: User, dataset_ref: str, payload: dict[str, Any]
                       ) -> dict[str, Any]:
        """Owner only: change description, labels, long description, location or credentials
        (a location and its credentials move together: the credentials' query string is signed
        for one object)."""
        payload = check.body(payload)
        allowed = {"description", "labels", "long_description", "location", "credentials"}
        extra = set(payload) - allowed
        if extra:
            raise ValidationError(f"cannot change {', '.join(sorted(extra))} of a dataset; "
                                  f"only {', '.join(sorted(allowed))}.")
        with self.store.transaction():
            dataset = self._resolve("dataset", dataset_ref, user=user)
            self._require_owner(user, dataset, "change it")
            if "description" in payload:
                dataset.description = check.text(payload, "description", required=False,
                                                 limit=1024, multiline=True)
            if "labels" in payload:
                dataset.labels = check.labels(payload)
            if "long_description" in payload:
                dataset.long_description = check.text(payload, "long_description",
                                                      required=False, limit=200_000, multiline=True)
            if "location" in payload:
                if "credentials" not in payload:
                    raise ValidationError("a new location needs its credentials: the presigned "
                                          "query string is signed for one object.")
                dataset.location = check.location(check.text(payload, "location", limit=2048))
            if "credentials" in payload:
                self.store.put_secret(dataset.id,
                                      self._seal(check.credentials(payload["credentials"])))
            self.store.put(dataset)
            self._audit(user.name, "dataset.update", dataset, {"fields": sorted(payload)})
        return self._show_dataset(dataset)

    def list_datasets(self, user: User) -> list[dict[str, Any]]:
        return [self._show_dataset(d)
                for d in self._scope(user).only("dataset", self.store.find("dataset"))]

    def get_dataset(self, user: User, dataset_ref: str) -> dict[str, Any]:
        return self._show_dataset(self._resolve("dataset", dataset_ref, user=user))

    # --- apps, builds and their whitelisting tasks ---------------------------------------------

    def create_app(self, user: User, payload: dict[str, Any]) -> dict[str, Any]:
        """An app (name, image repository, domain); opens its DOMAIN_WHITELIST task."""
        payload = check.body(payload)
        name = check.text(payload, "name", limit=128)
        now = utc_now()
        app = App(id=str(uuid.uuid4()), owner=user.name, created_at=now, name=name,
                  image=check.text(payload, "image", limit=512),
                  domain=check.domain(check.text(payload, "domain", limit=253)),
                  description=check.text(payload, "description", required=False, limit=1024,
                                         multiline=True))
        task = Task(id=str(uuid.uuid4()), owner=user.name, created_at=now,
                    task_type=TASK_DOMAIN, app_id=app.id)
        app.domain_task_id = task.id
        with self.store.transaction():
            self._unique_name("app", name)
            self.store.put(app)
            self.store.put(task)
            self._audit(user.name, "app.create", app, {"name": name, "domain": app.domain})
            self._audit(user.name, "task.create", task, {"type": TASK_DOMAIN})
        return app.to_dict()

    def list_apps(self, user: User) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self._scope(user).only("app", self.store.find("app"))]

    def get_app(self, user: User, app_ref: str) -> dict[str, Any]:
        return self._resolve("app", app_ref, user=user).to_dict()

    def create_build(self, user: User, payload: dict[str, Any]) -> dict[str, Any]:
        """App owner only: a build (image reference, measurements); opens its BUILD_WHITELIST task."""
        payload = check.body(payload)
        image = check.text(payload, "image", limit=512)
        measurements = check.measurements(payload.get("measurements"))
        now = utc_now()
        with self.store.transaction():
            app = self._resolve("app", payload.get("app_id") or payload.get("app"), user=user)
            self._require_owner(user, app, "register its builds")
            build = Build(id=str(uuid.uuid4()), owner=user.name, created_at=now, app_id=app.id,
                          image=image, measurements=measurements)
            task = Task(id=str(uuid.uuid4()), owner=user.name, created_at=now,
                        task_type=TASK_BUILD, app_id=app.id, build_id=build.id)
            build.task_id = task.id
            self.store.put(build)
            self.store.put(task)
            self._audit(user.name, "build.create", build, {"image": image, **measurements})
            self._audit(user.name, "task.create", task, {"type": TASK_BUILD})
        return build.to_dict()

    def list_builds(self, user: User, app_ref: str | None = None) -> list[dict[str, Any]]:
        builds = self._scope(user).only("build", self.store.find("build"))
        if app_ref:
            app_id = self._resolve("app", app_ref, user=user).id
            builds = [b for b in builds if b.app_id == app_id]
        return [b.to_dict() for b in builds]

    def get_build(self, user: User, build_id: str) -> dict[str, Any]:
        return self._resolve("build", build_id, user=user).to_dict()

    def list_tasks(self, user: User, status: str | None = None) -> list[dict[str, Any]]:
        tasks = self._scope(user).only("task", self.store.find("task"))
        if status:
            tasks = [t for t in tasks if t.status == status.upper()]
        return [t.to_dict() for t in tasks]

    def get_task(self, user: User, task_id: str) -> dict[str, Any]:
        return self._resolve("task", task_id, user=user).to_dict()

    def approve_task(self, user: User, task_id: str) -> dict[str, Any]:
        return self._decide_task(user, task_id, APPROVED, None)

    def deny_task(self, user: User, task_id: str, reason: str | None = None) -> dict[str, Any]:
        return self._decide_task(user, task_id, DENIED,
                                 check.reason(reason, what="a denial", required=False))

    def _decide_task(self, user: User, task_id: str, status: str, reason: str | None
                     ) -> dict[str, Any]:
        self._require_admin(user, "approve or deny whitelisting tasks")
        with self.store.transaction():
            task = self._resolve("task", task_id)
            if task.status != PENDING:
                raise ConflictError(f"task {task.id} is already {task.status}.")
            task.status, task.decided_by, task.decided_at = status, user.name, utc_now()
            task.reason = reason or None
            self.store.put(task)
            self._audit(user.name, f"task.{status.lower()}", task,
                        {"type": task.task_type, "reason": task.reason})
        return task.to_dict()

    # --- application configurations ----------------------------------------------------------

    def create_app_config(self, user: User, payload: dict[str, Any]) -> dict[str, Any]:
        """App owner only: image (a registered build's), name, ports, labels, config items."""
        payload = check.body(payload)
        name = check.text(payload, "name", limit=128)
        image = check.text(payload, "image", limit=512)
        ports = check.ports(payload.get("ports"))
        items = check.config_items(payload.get("config_items"), set(ports))
        with self.store.transaction():
            if payload.get("build_id"):
                build = self._resolve("build", payload["build_id"], user=user)
                if build.image != image:
                    raise ValidationError(f"build {build.id} is image {build.image!r}, not "
                                          f"{image!r}.")
            else:
                builds = [b for b in self._scope(user).only("build", self.store.find("build"))
                          if b.image == image]
                if not builds:
                    raise ValidationError(f"no build is registered for image {image!r}.",
                                          hint="Register the enclave image's build first.")
                build = builds[-1]
            app = self._resolve("app", build.app_id)
            self._require_owner(user, app, "configure it")
            self._unique_name("app_config", name)
            config = AppConfig(
                id=str(uuid.uuid4()), owner=user.name, created_at=utc_now(), name=name,
                description=check.text(payload, "description", required=False, limit=1024,
                                       multiline=True),
                image=image, app_id=app.id, build_id=build.id, ports=ports,
                labels=check.labels(payload), config_items=items)
            self.store.put(config)
            self._audit(user.name, "app_config.create", config,
                        {"name": name, "image": image, "build_id": build.id})
        return config.to_dict()

    def list_app_configs(self, user: User) -> list[dict[str, Any]]:
        return [c.to_dict()
                for c in self._scope(user).only("app_config", self.store.find("app_config"))]

    def get_app_config(self, user: User, config_ref: str) -> dict[str, Any]:
        return self._resolve("app_config", config_ref, what="application configuration",
                             user=user).to_dict()

    # --- audit ------------------------------------------------------------------------------

    def audit_log(self, user: User, limit: int | None = None,
                  object_id: str | None = None) -> list[dict[str, Any]]:
        """Rows, oldest first (the last ``limit``, 1..:data:`MAX_AUDIT_LIMIT`, when given):
        every row for an administrator; for anyone else the rows about an object the user may
        see, and the rows of the user's own actions. ValidationError for another limit."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 1 <= limit <= MAX_AUDIT_LIMIT):
            raise ValidationError(f"'limit' must be a whole number from 1 to {MAX_AUDIT_LIMIT}.",
                                  hint="leave it out for every row.")
        if user.is_admin:
            return audit.entries(self.store, limit=limit, object_id=object_id)
        return audit.entries(self.store, limit=limit, object_id=object_id,
                             visible=(self._scope(user).all_ids(), user.name))

    def verify_audit(self, user: User | None = None) -> dict[str, Any]:
        """``{"ok": True, "rows": n, …}`` or ``{"ok": False, "bad_row": id, "reason": …}``."""
        return audit.verify(self.store)


__all__ = ["Service", "utc_now"]
