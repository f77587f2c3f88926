"""The login the CLI keeps between commands: `twinstack login` writes it, `logout` removes it.

One file, $XDG_CONFIG_HOME/twinstack/credentials.json (default ~/.config/twinstack/), mode 0600
in a 0700 folder, holding the platform's URL, the CA file to trust, the user name and the bearer
token (which expires and can be revoked on the platform; the password is never stored).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    url: str
    ca: str | None
    user: str
    token: str
    expires_at: float | None = None  # seconds since the epoch, as the platform said at login


def credentials_path() -> Path:
    """Where the login is kept: $XDG_CONFIG_HOME/twinstack/credentials.json."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "twinstack" / "credentials.json"


def save_credentials(credentials: Credentials, path: Path | None = None) -> Path:
    """Write the file atomically, readable by its owner only (the token is a password)."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover tmp file may have had another mode
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(credentials), out, indent=1)
    os.replace(tmp, path)
    return path


def load_credentials(path: Path | None = None) -> Credentials | None:
    """The stored login, or None when there is none; ValueError names a damaged file."""
    path = path or credentials_path()
    try:
        data = json.loads(path.read_text())
        return Credentials(url=str(data["url"]), ca=data.get("ca"), user=str(data["user"]),
                           token=str(data["token"]), expires_at=data.get("expires_at"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a TwinStack login ({exc}); run twinstack logout, "
                         "then twinstack login NAME") from exc


def remove_credentials(path: Path | None = None) -> bool:
    """Forget the login; False when there was none."""
    try:
        (path or credentials_path()).unlink()
    except FileNotFoundError:
        return False
    return True
