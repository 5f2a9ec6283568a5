"""Fetching TFF's dataset files into a data directory: sized first, resumable, verified, atomic.

The files are the ones TFF's loaders download on first use (`tff.simulation.datasets.<module>.
load_data`), from the same place (`DEFAULT_URL`, TFF's public bucket). Written here rather than
calling those loaders because they decompress straight into the final file name, so an
interrupted download leaves a truncated file that the next load trusts, they cannot resume and
they verify nothing but the Stack Overflow word counts' sha256.

Here each archive is downloaded to `<archive>.download` in the data directory (a new attempt
resumes it with an HTTP range request), checked against the size the server announced (and
the sha256 TFF's loader checks, where it has one), unpacked to a temporary name, verified (the
SQLite schema, and each split's clients and examples as TFF's loaders document them,
`tff_datasets.TffDatasetSpec.published`) and only then renamed to its final name. A truncated
or corrupt download is refused and fetched again, up to `attempts` times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import lzma
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Optional

from fl_tff import files
from fl_tff.data import tff_datasets

DEFAULT_URL = 'https://storage.googleapis.com/tff-datasets-public/'
_CHUNK = 1 << 20
DOWNLOAD_SUFFIX = '.download'


class DownloadUnavailableError(Exception):
    """The server cannot be reached (no network, a proxy, a wrong URL): nothing was written."""


class DownloadError(Exception):
    """A download failed every attempt (truncated, corrupt or not TFF's file)."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs, as published: `archive` at the URL unpacks to `name`."""

    name: str
    archive: str
    sha256: str = ''  # Of the archive, where TFF's own loader checks one.

    def url(self, base: str) -> str:
        return urllib.parse.urljoin(base if base.endswith('/') else base + '/', self.archive)


def remote_files(name: str) -> tuple[RemoteFile, ...]:
    """The published files dataset `name` needs (its SQLite file, then any extra files)."""
    spec = tff_datasets.TFF_DATASETS[name]
    # TFF's Stack Overflow word counts, with the sha256 `stackoverflow.load_word_counts` checks.
    extra = {tff_datasets.STACKOVERFLOW_WORD_COUNTS: RemoteFile(
        tff_datasets.STACKOVERFLOW_WORD_COUNTS, 'stackoverflow.word_count.tar.bz2',
        sha256='1dc00256d6e527c54b9756d968118378ae14e6692c0b3b6cad470cdd3f0c519c')}
    return (RemoteFile(spec.file, spec.file + '.lzma'), *(extra[f] for f in spec.extra_files))


def missing_files(name: str, data_dir: str) -> tuple[RemoteFile, ...]:
    """The files of dataset `name` not yet in `data_dir`."""
    return tuple(f for f in remote_files(name)
                 if not os.path.isfile(os.path.join(data_dir, f.name)))


def _open(url: str, timeout: float, method: str = 'GET', offset: int = 0):
    request = urllib.request.Request(url, method=method,
                                     headers={'Range': f'bytes={offset}-'} if offset else {})
    return urllib.request.urlopen(request, timeout=timeout)


def archive_sizes(name: str, remote: tuple[RemoteFile, ...], url: str, timeout: float = 20.0
                  ) -> dict[str, Optional[int]]:
    """Each archive of dataset `name`'s files `remote`: its size in bytes as the server
    announces it (None when it does not).

    Raises:
      DownloadUnavailableError: When the server cannot be reached or does not have a file; the
        message says where to get the files on another machine.
    """
    sizes = {}
    for f in remote:
        try:
            with _open(f.url(url), timeout, method='HEAD') as response:
                length = response.headers.get('Content-Length')
                sizes[f.archive] = int(length) if length is not None else None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, 'reason', None) or e
            raise DownloadUnavailableError(
                f'cannot download {f.url(url)} ({reason}); on a machine with internet run '
                f'`python -m experiments.fetch_data --dataset={name} --data_dir=DIR` (or fetch that '
                f'URL and unpack it: {_unpack_hint(f)}) and copy {f.name} into the data '
                'directory') from e
    return sizes


def _unpack_hint(f: RemoteFile) -> str:
    return (f'xz -d {f.archive}' if f.archive.endswith('.lzma')
            else f'tar -xjf {f.archive} {f.name}')


def _human(size: Optional[int]) -> str:
    if size is None:
        return 'size not announced'
    for unit in ('B', 'KB', 'MB', 'GB'):
        if size < 1000 or unit == 'GB':
            return f'{size:.0f} {unit}' if unit == 'B' else f'{size:.1f} {unit}'
        size /= 1000
    raise AssertionError('unreachable')


def _download(f: RemoteFile, url: str, data_dir: str, timeout: float,
              show_progress: bool) -> str:
    """Downloads (or resumes) `f`'s archive to `<archive>.download`; returns its path.

    Raises:
      DownloadError: When the connection breaks or the body is shorter or longer than announced
        (what was received is kept, so the next attempt resumes).
    """
    import tqdm  # A dependency of TFF; imported here because it is only needed to download.
    path = os.path.join(data_dir, f.archive + DOWNLOAD_SUFFIX)
    offset = os.path.getsize(path) if os.path.isfile(path) else 0
    try:
        response = _open(f.url(url), timeout, offset=offset)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # Nothing left past what we have: the file is complete.
            return path
        raise DownloadError(f'{f.url(url)}: HTTP {e.code} {e.reason}') from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f'{f.url(url)}: {getattr(e, "reason", None) or e}') from e
    with response:
        resumed = response.status == 206
        if not resumed:
            offset = 0  # The server sent the whole file: start over.
        length = response.headers.get('Content-Length')
        total = offset + int(length) if length is not None else None
        received = offset
        with open(path, 'ab' if resumed else 'wb') as out, tqdm.tqdm(
                total=total, initial=offset, unit='B', unit_scale=True, disable=not show_progress,
                desc=f.archive) as bar:
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(f'{f.archive}: the connection broke after {received} bytes '
                                    f'({e})') from e
            finally:
                out.flush()
                os.fsync(out.fileno())
    if total is not None and received != total:
        raise DownloadError(f'{f.archive}: received {received} bytes of {total}')
    return path


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _unpack(f: RemoteFile, archive: str, target: str) -> None:
    """Unpacks `archive` into `target` atomically.

    Raises:
      DownloadError: When the archive is corrupt or truncated (the target is left as it was).
    """
    try:
        with files.atomic_write(target, 'wb') as out:
            if f.archive.endswith('.lzma'):
                decompressor = lzma.LZMADecompressor()
                with open(archive, 'rb') as src:
                    while chunk := src.read(_CHUNK):
                        out.write(decompressor.decompress(chunk))
                if not decompressor.eof:
                    raise DownloadError(f'{f.archive} is truncated (its compressed stream ends '
                                        'early)')
            else:
                with tarfile.open(archive, 'r:bz2') as tar:
                    member = tar.extractfile(tar.getmember(f.name))
                    shutil.copyfileobj(member, out, _CHUNK)
    except (lzma.LZMAError, EOFError, tarfile.TarError, KeyError) as e:
        raise DownloadError(f'{f.archive} does not unpack ({e})') from e
    except OSError as e:
        if e.errno is not None:
            raise  # A local disk problem, not the archive's.
        raise DownloadError(f'{f.archive} does not unpack ({e})') from e  # bz2's bad data.


def fetch_file(f: RemoteFile, url: str, data_dir: str, verify: Callable[[str], str],
               attempts: int = 3, retry_wait: float = 2.0, timeout: float = 60.0,
               show_progress: bool = True, log: Callable[[str], None] = print) -> str:
    """Downloads, checks, unpacks and verifies `f` into `data_dir`; returns the final path.

    Args:
      f: The file and its archive.
      url: The directory URL holding the archive.
      data_dir: Where the file goes (created when missing).
      verify: `path -> problem`: '' when the unpacked file is right.
      attempts: How many downloads to try; a broken connection resumes, a corrupt archive
        starts over.
      retry_wait: Seconds before the second attempt, doubling after each.
      timeout: Seconds a connection may stay silent.
      show_progress: Draw a progress bar.
      log: Where messages go.

    Returns:
      The path of the verified file.

    Raises:
      DownloadError: When every attempt failed, or the unpacked file is not the published one
        (not retried); the final name is never written with a file that did not verify.
    """
    os.makedirs(data_dir, exist_ok=True)
    target = os.path.join(data_dir, f.name)
    unverified = os.path.join(data_dir, files.PARTIAL_PREFIX + f.name)
    problem = ''
    for attempt in range(attempts):
        if attempt:
            log(f'{problem}; attempt {attempt + 1} of {attempts}')
            time.sleep(retry_wait * 2 ** (attempt - 1))
        try:
            archive = _download(f, url, data_dir, timeout, show_progress)
        except DownloadError as e:
            problem = str(e)
            continue
        if f.sha256 and _sha256(archive) != f.sha256:
            problem = f'{f.archive} has the wrong sha256 (expected {f.sha256})'
            os.remove(archive)
            continue
        try:
            _unpack(f, archive, unverified)
        except DownloadError as e:
            problem = str(e)
            os.remove(archive)  # Corrupt: the next attempt downloads it again from the start.
            continue
        problem = verify(unverified)
        if problem:  # Not TFF's file: downloading it again would give the same one.
            os.remove(unverified)
            os.remove(archive)
            raise DownloadError(f'{f.url(url)} unpacks to a {f.name} that {problem}')
        os.replace(unverified, target)
        files.fsync_directory(data_dir)
        os.remove(archive)
        return target
    raise DownloadError(f'{f.url(url)}: {problem} (after {attempts} attempts)')


def fetch(name: str, data_dir: str, url: str = DEFAULT_URL, attempts: int = 3,
          retry_wait: float = 2.0, show_progress: bool = True,
          log: Callable[[str], None] = print) -> list[str]:
    """Fetches the files TFF dataset `name` needs into `data_dir`, skipping those present.

    Args:
      name: A key of `tff_datasets.TFF_DATASETS`.
      data_dir: The directory `--data_dir` names.
      url: Where the archives are (TFF's public bucket by default).
      attempts: Downloads tried per file.
      retry_wait: Seconds before the first retry, doubling after each.
      show_progress: Draw progress bars.
      log: Where messages go.

    Returns:
      The paths written.

    Raises:
      KeyError: For an unknown dataset.
      DownloadUnavailableError: When the server cannot be reached (checked first, before
        anything is written).
      DownloadError: When a file failed every attempt.
    """
    spec = tff_datasets.TFF_DATASETS[name]
    missing = missing_files(name, data_dir)
    if not missing:
        return []
    sizes = archive_sizes(name, missing, url)
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(data_dir if os.path.isdir(data_dir) else
                                 os.path.dirname(os.path.abspath(data_dir)) or '.').free
        log(f'{name}: downloading ' + ', '.join(f'{a} ({_human(s)})' for a, s in sizes.items()) +
            f' from {url} into {os.path.abspath(data_dir)} ({_human(free)} free; each file is '
            'larger unpacked)')
    written = []
    for f in missing:
        verify = ((lambda path: tff_datasets.sqlite_problem(path, spec.published))
                  if f.name == spec.file else (lambda path: ''))
        written.append(fetch_file(f, url, data_dir, verify, attempts=attempts,
                                  retry_wait=retry_wait, show_progress=show_progress, log=log))
        log(f'{name}: verified {written[-1]}')
    return written
