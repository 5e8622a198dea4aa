"""The portal's users: who may sign in, with which role, and which households they see.

A users file is JSON::

    {"users": {"alice": {"role": "advisor", "households": ["H0000001", "H0000007"],
                         "password": "scrypt$16384$8$1$<salt>$<hash>"},
               "rita":  {"role": "rebalancing", "password": "scrypt$..."}}}

Passwords are kept only as salted hashes: :func:`hashlib.scrypt` (n=2**14, r=8, p=1, 32 bytes)
of the password with 16 random bytes of salt, both base64 in the string.  An ``advisor`` sees and
changes only the households listed; the ``rebalancing`` group sees all.  ``canopy portal-user``
writes entries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.contract.errors import ConfigError

__all__ = ["User", "Role", "hash_password", "verify_password", "load_users", "add_user", "LOCAL_USER"]


class Role:
    advisor = "advisor"
    rebalancing = "rebalancing"
    all = (advisor, rebalancing)


#: scrypt's cost parameters (memory about 16 MiB per hash).
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class User:
    """A signed-in person: name, role and, for an advisor, the households they may see."""

    name: str
    role: str
    households: frozenset[str] = frozenset()

    def may_see(self, household_id: str | None) -> bool:
        """Whether this user may see and change accounts of ``household_id``."""
        return self.role == Role.rebalancing or (household_id is not None and household_id in self.households)


#: Without a users file (loopback only) the one local user is of the rebalancing group.
LOCAL_USER = User(os.environ.get("USER") or "local", Role.rebalancing)


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` of ``password`` with a fresh random salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=64 * 2**20, **SCRYPT)
    return "$".join(["scrypt", str(SCRYPT["n"]), str(SCRYPT["r"]), str(SCRYPT["p"]),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored`` (compared in constant time)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected), maxmem=64 * 2**20)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"users": {}}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"users file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
        raise ConfigError(f"users file {path} must be a JSON object with a \"users\" object")
    return data


def load_users(path: str | Path) -> dict[str, tuple[User, str]]:
    """``{name: (User, password hash)}`` of the users file at ``path``.

    Raises
    ------
    ConfigError
        A missing file, a user without a known role or a password hash, or households that are not a list.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"users file {path} does not exist; write one with canopy portal-user")
    users = {}
    for name, entry in _read(path)["users"].items():
        if not isinstance(entry, dict) or entry.get("role") not in Role.all:
            raise ConfigError(f"users file {path}: user {name!r} needs a role, one of {', '.join(Role.all)}")
        if not isinstance(entry.get("password"), str) or not entry["password"].startswith("scrypt$"):
            raise ConfigError(f"users file {path}: user {name!r} needs a password hash (canopy portal-user)")
        households = entry.get("households", [])
        if not isinstance(households, list) or not all(isinstance(h, str) for h in households):
            raise ConfigError(f"users file {path}: households of {name!r} must be a list of household ids")
        users[name] = (User(name, entry["role"], frozenset(households)), entry["password"])
    return users


def add_user(path: str | Path, name: str, password: str, role: str, households: list[str]) -> None:
    """Add or replace user ``name`` in the users file (created if missing), the password hashed."""
    if role not in Role.all:
        raise ConfigError(f"role {role!r} is not one of {', '.join(Role.all)}")
    if not password:
        raise ConfigError("a password may not be empty")
    path = Path(path)
    data = _read(path)
    data["users"][name] = {"role": role, "households": sorted(set(households)), "password": hash_password(password)}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(temporary, 0o600)
    temporary.replace(path)
