"""Finding, verifying and downloading data files.

Every data set file is described by a :class:`RemoteFile`: its canonical name, the URLs it can be
downloaded from (canonical location first, then mirrors) and its published checksum(s).
:func:`fetch` makes sure the files are present in a folder with the right contents:

* a file that is already there is used when its checksum matches; when it does not match a
  :class:`DataError` says which file, the expected and the actual checksum, and to delete or
  replace it (we never silently overwrite or use a corrupt file);
* a missing file is downloaded (urllib, one try per URL, ~30 s timeout) into a temporary file in
  the same folder, verified, then atomically renamed to its final name, so an interrupted or
  corrupt download never leaves a half-written file under the final name;
* when it cannot be downloaded (offline, all mirrors down) the error names every missing file,
  the URLs, and the exact folder to put them in by hand.

A file may also be accepted in another local form (:class:`Alternative`), e.g. an uncompressed
copy of a ``.gz`` download or a gzip of a large text file.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .base import DataError

ENV_VAR = "AEVB_DATA"
DEFAULT_ROOT = Path("~/.cache/aevb")
TIMEOUT_S = 30.0
CHUNK = 1 << 20
HASH_ALGOS = ("sha256", "sha1", "md5")  # preference order when several are known
USER_AGENT = "aevb-data-fetch/0.1 (+https://github.com; python urllib)"

PathLike = Union[str, os.PathLike]


def data_root(data_dir: Optional[PathLike] = None) -> Path:
    """Root folder for data sets: ``data_dir`` if given, else ``$AEVB_DATA``, else ``~/.cache/aevb``.

    The folder is not created here (nothing is written until a download is needed).
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT.expanduser()


def _normalise_hex(value: Optional[str]) -> Optional[str]:
    return None if value is None else value.strip().lower()


@dataclass(frozen=True)
class Alternative:
    """Another local form in which a file is accepted if present (never downloaded).

    ``gzip_of_primary``: the file is a gzip of the primary file; it is accepted when its own
    checksum matches, or (if it has none or it differs) when its decompressed bytes match the
    primary's checksum. ``decompress``: whether a reader must gunzip it (informational).
    With no checksum at all the file is accepted unverified (its format is still validated by
    the parser).
    """

    name: str
    md5: Optional[str] = None
    sha1: Optional[str] = None
    sha256: Optional[str] = None
    gzip_of_primary: bool = False

    def checksums(self) -> Dict[str, str]:
        return _checksum_dict(self)


@dataclass(frozen=True)
class RemoteFile:
    """A file of a data set: canonical ``name``, download ``urls`` (canonical first, then mirrors)
    and published checksums (any of md5 / sha1 / sha256; all given ones must match)."""

    name: str
    urls: Tuple[str, ...]
    md5: Optional[str] = None
    sha256: Optional[str] = None
    sha1: Optional[str] = None
    alternatives: Tuple[Alternative, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            object.__setattr__(self, "urls", (self.urls,))
        else:
            object.__setattr__(self, "urls", tuple(self.urls))
        object.__setattr__(self, "alternatives", tuple(self.alternatives))
        for algo in HASH_ALGOS:
            object.__setattr__(self, algo, _normalise_hex(getattr(self, algo)))

    def checksums(self) -> Dict[str, str]:
        return _checksum_dict(self)

    def with_urls(self, urls: Sequence[str]) -> "RemoteFile":
        """A copy downloading from other URLs (tests, private mirrors)."""
        return RemoteFile(self.name, tuple(urls), self.md5, self.sha256, self.sha1, self.alternatives)


def _checksum_dict(obj) -> Dict[str, str]:
    out = {}
    for algo in HASH_ALGOS:
        v = getattr(obj, algo, None)
        if v:
            out[algo] = v.strip().lower()
    return out


def url_join(base: str, name: str) -> str:
    return base if base.endswith(name) else base.rstrip("/") + "/" + name


# --------------------------------------------------------------------------------------------
# checksums


def file_checksums(path: PathLike, algos: Iterable[str] = ("md5",), gunzip: bool = False) -> Dict[str, str]:
    """Hex digests of a file (read in 1 MiB chunks); with ``gunzip`` of its decompressed bytes."""
    hashers = {a: hashlib.new(a) for a in algos}
    opener = gzip.open if gunzip else open
    try:
        with opener(path, "rb") as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                for h in hashers.values():
                    h.update(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # BadGzipFile is an OSError; explicit for clarity
        raise DataError(f"could not read {path}: {e}. Delete it and download it again.") from e
    return {a: h.hexdigest() for a, h in hashers.items()}


def file_checksum(path: PathLike, algo: str = "md5") -> str:
    """Hex digest of one file with one algorithm (``md5``, ``sha1``, ``sha256``...)."""
    return file_checksums(path, (algo,))[algo]


def checksum_mismatch(path: PathLike, expected: Dict[str, str], gunzip: bool = False) -> Optional[Tuple[str, str, str]]:
    """None when every expected checksum matches, else ``(algo, expected, actual)`` of the first
    mismatch."""
    if not expected:
        return None
    actual = file_checksums(path, expected.keys(), gunzip=gunzip)
    for algo, exp in expected.items():
        if actual[algo] != exp:
            return algo, exp, actual[algo]
    return None


def verify_file(path: PathLike, md5: Optional[str] = None, sha1: Optional[str] = None,
                sha256: Optional[str] = None) -> None:
    """Raise :class:`DataError` unless ``path`` has the given checksum(s)."""
    expected = {a: v.lower() for a, v in (("sha256", sha256), ("sha1", sha1), ("md5", md5)) if v}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    bad = checksum_mismatch(path, expected)
    if bad:
        raise DataError(_mismatch_message(path, *bad))


def _mismatch_message(path: Path, algo: str, expected: str, actual: str, what: str = "") -> str:
    return (
        f"{path}{what} has the wrong checksum: expected {algo} {expected}, got {actual}. "
        f"The file is corrupt, truncated or a different version: delete it (or replace it with a "
        f"correct copy) and run again to download it."
    )


# --------------------------------------------------------------------------------------------
# local files


def _check_local(rf: RemoteFile, folder: Path) -> Optional[Path]:
    """Path of an acceptable local copy of ``rf`` in ``folder`` or None when there is none.

    Raises DataError when a copy is present but wrong."""
    primary = folder / rf.name
    if primary.is_file():
        bad = checksum_mismatch(primary, rf.checksums())
        if bad:
            raise DataError(_mismatch_message(primary, *bad))
        return primary
    for alt in rf.alternatives:
        p = folder / alt.name
        if not p.is_file():
            continue
        own = alt.checksums()
        bad_own = checksum_mismatch(p, own) if own else None
        if own and bad_own is None:
            return p
        if alt.gzip_of_primary and rf.checksums():
            bad = checksum_mismatch(p, rf.checksums(), gunzip=True)
            if bad is None:
                return p
            if bad_own is None:
                raise DataError(_mismatch_message(p, *bad, what=" (decompressed)"))
        if bad_own is not None:
            raise DataError(_mismatch_message(p, *bad_own))
        return p  # no checksum known for this form: accepted, the parser validates the format
    return None


# --------------------------------------------------------------------------------------------
# downloads


class _DownloadFailed(Exception):
    def __init__(self, message: str, network: bool):
        super().__init__(message)
        self.network = network  # True: could not reach the server (offline?)


def _progress(total: Optional[int], desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False, disable=None, file=sys.stderr)


def _download_one(url: str, rf: RemoteFile, folder: Path, timeout: float, progress: bool) -> Path:
    """Download ``url`` into a temp file in ``folder``, verify, rename to ``rf.name``."""
    final = folder / rf.name
    expected = rf.checksums()
    hashers = {a: hashlib.new(a) for a in expected}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{rf.name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise _DownloadFailed(f"{url}: HTTP {e.code} {e.reason}", network=False) from e
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _DownloadFailed(f"{url}: {reason}", network=True) from e
        with resp, os.fdopen(fd, "wb") as out:
            fd = -1
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _progress(total, rf.name, progress)
            got = 0
            try:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (socket.timeout, TimeoutError, OSError) as e:
                        raise _DownloadFailed(f"{url}: connection lost after {got} bytes ({e})",
                                              network=True) from e
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if total is not None and got != total:
            raise _DownloadFailed(f"{url}: download incomplete ({got} of {total} bytes)", network=True)
        for algo, exp in expected.items():
            act = hashers[algo].hexdigest()
            if act != exp:
                raise _DownloadFailed(
                    f"{url}: downloaded file has the wrong checksum (expected {algo} {exp}, got "
                    f"{act}); it was discarded", network=False)
        os.replace(tmp, final)
        return final
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass


def fetch(files: Sequence[RemoteFile], folder: PathLike, download: bool = True, *,
          timeout: float = TIMEOUT_S, progress: bool = True,
          urls: Optional[Dict[str, Sequence[str]]] = None) -> Dict[str, Path]:
    """Make sure every file is in ``folder`` with the right checksum; return ``{name: path}``.

    ``urls`` optionally overrides the download URLs per file name. The returned path may be an
    accepted :class:`Alternative` (e.g. the uncompressed copy). Raises :class:`DataError` on a
    wrong checksum or when files are missing and cannot be downloaded.
    """
    folder = Path(folder).expanduser()
    found: Dict[str, Path] = {}
    missing: List[RemoteFile] = []
    for rf in files:
        local = _check_local(rf, folder) if folder.is_dir() else None
        if local is None:
            missing.append(rf)
        else:
            found[rf.name] = local
    if not missing:
        return found

    errors: Dict[str, List[str]] = {rf.name: [] for rf in missing}
    still_missing: List[RemoteFile] = []
    offline = False
    if download:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(
                f"cannot create the data folder {folder} ({e}); choose another one with "
                f"--data-dir or the {ENV_VAR} environment variable") from e
    for rf in missing:
        file_urls = tuple(urls[rf.name]) if urls and rf.name in urls else rf.urls
        if not download or offline or not file_urls:
            if offline:
                errors[rf.name].append("not tried: the previous file could not be reached (offline?)")
            still_missing.append(rf)
            continue
        ok = False
        all_network = True
        for url in file_urls:
            try:
                found[rf.name] = _download_one(url, rf, folder, timeout, progress)
                ok = True
                break
            except _DownloadFailed as e:
                errors[rf.name].append(str(e))
                all_network = all_network and e.network
        if not ok:
            still_missing.append(rf)
            offline = all_network
    if not still_missing:
        return found
    raise DataError(_missing_message(still_missing, folder, download, errors, urls))


def _missing_message(missing: Sequence[RemoteFile], folder: Path, download: bool,
                     errors: Dict[str, List[str]], urls) -> str:
    lines = []
    if download:
        lines.append(f"could not download {len(missing)} data file(s):")
    else:
        lines.append(f"{len(missing)} data file(s) missing and downloading is disabled:")
    for rf in missing:
        file_urls = tuple(urls[rf.name]) if urls and rf.name in urls else rf.urls
        sums = ", ".join(f"{a} {v}" for a, v in rf.checksums().items()) or "no published checksum"
        lines.append(f"  - {rf.name} ({sums})")
        for u in file_urls:
            lines.append(f"      from {u}")
        for alt in rf.alternatives:
            lines.append(f"      (a local {alt.name} is accepted instead)")
        for err in errors.get(rf.name, []):
            lines.append(f"      {err}" if err.startswith("not tried") else f"      failed: {err}")
    lines.append(
        f"Download them by hand (on a machine with internet access) and put them in the folder\n"
        f"  {folder.resolve() if folder.exists() else folder.absolute()}\n"
        f"or point the program at a folder that already holds them with --data-dir PATH "
        f"(or set the {ENV_VAR} environment variable to a root folder containing one sub-folder "
        f"per data set)."
    )
    return "\n".join(lines)
