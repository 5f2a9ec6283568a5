"""`--download` and `experiments.fetch_data`: a tiny file in TFF's format served on the loopback
address (the downloader's URL is configurable for this), checked to land verified and atomically;
broken and truncated downloads are refused and fetched again; offline is one line before any work."""

import dataclasses
import http.server
import lzma
import os
import socket
import threading

import pytest

from fl_tff import config as config_lib
from fl_tff import experiment
from fl_tff.data import download, tff_datasets
from tests import tff_files
from tests.helpers import run_python

NAME = 'shakespeare'
FILE = 'shakespeare.sqlite'
ARCHIVE = FILE + '.lzma'


class _Server(http.server.ThreadingHTTPServer):
    """Serves `files` (archive name -> bytes), honouring range requests; `plan` says what each
    successive GET sends: 'whole', 'cut' (announces the whole length, sends half, hangs up),
    or the bytes to send instead (a short or wrong file, announced as its own length)."""

    def __init__(self, files, plan=(), watch=None):
        super().__init__(('127.0.0.1', 0), _Handler)
        self.files, self.plan, self.watch = files, list(plan), watch
        self.requests = []  # (method, path, Range header or None, whether `watch` existed)

    @property
    def url(self):
        return f'http://127.0.0.1:{self.server_address[1]}/bucket/'


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _serve(self, send_body):
        server = self.server
        name = self.path.rsplit('/', 1)[-1]
        server.requests.append((self.command, self.path, self.headers.get('Range'),
                                server.watch is not None and os.path.exists(server.watch)))
        if name not in server.files:
            self.send_error(404)
            return
        body = server.files[name]
        step = server.plan.pop(0) if (send_body and server.plan) else 'whole'
        if isinstance(step, bytes):
            body, step = step, 'whole'
        start = int(self.headers['Range'].split('=')[1].rstrip('-')) if self.headers.get('Range') else 0
        self.send_response(206 if start else 200)
        self.send_header('Content-Length', str(len(body) - start))
        self.end_headers()
        if not send_body:
            return
        if step == 'cut':
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body[start:])

    def do_HEAD(self):
        self._serve(send_body=False)

    def do_GET(self):
        self._serve(send_body=True)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A server factory over a tiny `shakespeare.sqlite` (4 clients), and its bytes; TFF's
    published split sizes are replaced by the tiny file's own for the verification."""
    tff_files.write_shakespeare(tmp_path, clients=4, lines=6)
    original = (tmp_path / FILE).read_bytes()
    monkeypatch.setitem(tff_datasets.TFF_DATASETS, NAME, dataclasses.replace(
        tff_datasets.TFF_DATASETS[NAME], published={'train': (4, 24), 'test': (4, 4)}))
    servers = []

    def serve(plan=(), watch=None, files=None):
        server = _Server(files or {ARCHIVE: lzma.compress(original)}, plan, watch)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        servers.append(server)
        return server

    yield serve, original
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port_url():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return f'http://127.0.0.1:{s.getsockname()[1]}/'


def _fetch(data_dir, server, **kwargs):
    messages = []
    written = download.fetch(NAME, str(data_dir), server.url, retry_wait=0, show_progress=False,
                             log=messages.append, **kwargs)
    return written, messages


def test_fetch_announces_the_size_then_lands_the_verified_file_atomically(served, tmp_path):
    serve, original = served
    data_dir = tmp_path / 'data'
    server = serve(watch=str(data_dir / FILE))
    written, messages = _fetch(data_dir, server)
    assert written == [str(data_dir / FILE)]
    assert (data_dir / FILE).read_bytes() == original
    assert os.listdir(data_dir) == [FILE]  # No archive, no partial file left.
    tff_datasets.check_available(NAME, str(data_dir))
    # The size came first (a HEAD), and the final name did not exist while the body was sent.
    assert [(m, watched) for m, _, _, watched in server.requests] == [('HEAD', False), ('GET', False)]
    assert f'{ARCHIVE} ({len(lzma.compress(original))} B)' in messages[0]
    # Present files are not fetched again.
    assert _fetch(data_dir, server)[0] == [] and len(server.requests) == 2


def test_a_broken_connection_resumes_with_a_range_request(served, tmp_path):
    serve, original = served
    server = serve(plan=['cut'])
    _, messages = _fetch(tmp_path / 'data', server)
    size = len(lzma.compress(original))
    gets = [(path, rng) for m, path, rng, _ in server.requests if m == 'GET']
    assert gets == [('/bucket/' + ARCHIVE, None), ('/bucket/' + ARCHIVE, f'bytes={size // 2}-')]
    assert f'{ARCHIVE}: received {size // 2} bytes of {size}; attempt 2 of 3' in messages
    assert (tmp_path / 'data' / FILE).read_bytes() == original


def test_a_truncated_archive_is_refused_and_downloaded_again(served, tmp_path):
    serve, original = served
    whole = lzma.compress(original)
    server = serve(plan=[whole[:len(whole) // 2]])  # Announced as complete, but cut short.
    _, messages = _fetch(tmp_path / 'data', server)
    gets = [rng for m, _, rng, _ in server.requests if m == 'GET']
    assert gets == [None, None]  # Started over, not resumed.
    assert any('truncated' in m or 'does not unpack' in m for m in messages), messages
    assert (tmp_path / 'data' / FILE).read_bytes() == original


def test_a_file_unlike_tffs_published_one_is_refused_and_nothing_is_left(served, tmp_path, monkeypatch):
    serve, _ = served
    monkeypatch.setitem(tff_datasets.TFF_DATASETS, NAME, dataclasses.replace(
        tff_datasets.TFF_DATASETS[NAME], published={'train': (715, 16_068)}))
    data_dir = tmp_path / 'data'
    server = serve()
    with pytest.raises(download.DownloadError, match=f'{ARCHIVE} unpacks to a {FILE} that has 4 '
                       "clients and 24 examples in split 'train'; TFF publishes 715 clients"):
        _fetch(data_dir, server)
    assert os.listdir(data_dir) == []
    assert [m for m, *_ in server.requests] == ['HEAD', 'GET']  # Not fetched again: same file.


def test_an_unreachable_server_is_one_error_before_anything_is_written(tmp_path):
    data_dir = tmp_path / 'data'
    with pytest.raises(download.DownloadUnavailableError,
                       match=f'cannot download http://127.0.0.1:.*{ARCHIVE}.*fetch_data '
                             f'--dataset={NAME} --data_dir=DIR.*xz -d {ARCHIVE}.*copy {FILE}'):
        download.fetch(NAME, str(data_dir), _closed_port_url(), log=lambda m: None)
    assert not data_dir.exists()


def _config(tmp_path, **kwargs):
    return config_lib.ExperimentConfig(dataset=NAME, model='char_lstm', num_clients=4,
                                       clients_per_round=2, output_dir=str(tmp_path / 'runs'),
                                       **kwargs).validate()


def test_download_flag_fetches_in_preflight_once_every_check_passed(served, tmp_path):
    serve, original = served
    server = serve()
    data_dir = tmp_path / 'data'
    with pytest.raises(config_lib.ConfigError, match='--data_dir: shakespeare needs .*--download'):
        _config(tmp_path, data_dir=str(data_dir))
    config = _config(tmp_path, data_dir=str(data_dir), download=True, dataset_url=server.url)
    experiment.preflight(config)
    assert (data_dir / FILE).read_bytes() == original
    # Where the files came from changes nothing the run computes: a rerun without the flags
    # resumes the same run directory.
    plain = _config(tmp_path, data_dir=str(data_dir))
    assert config.result_settings() == plain.result_settings()


def test_download_flag_offline_fails_in_preflight_before_any_directory(tmp_path):
    with pytest.raises(config_lib.ConfigError, match='--download needs --data_dir'):
        _config(tmp_path, download=True)
    config = _config(tmp_path, data_dir=str(tmp_path / 'data'), download=True,
                     dataset_url=_closed_port_url())
    with pytest.raises(config_lib.ConfigError, match=f'^--download: cannot download .*{ARCHIVE}'):
        experiment.preflight(config)
    assert sorted(os.listdir(tmp_path)) == []  # No data directory, no run directory.


def test_fetch_data_driver_offline_is_one_line_and_exit_2(tmp_path):
    result = run_python(['-m', 'experiments.fetch_data', f'--dataset={NAME}',
                         f'--data_dir={tmp_path / "data"}', f'--dataset_url={_closed_port_url()}'],
                        timeout=120)
    assert result.returncode == 2, result.stderr
    # Without the test's TF_CPP_MIN_LOG_LEVEL=2 the driver hides TF's start-up lines itself.
    lines = [line for line in result.stderr.strip().splitlines() if ' tensorflow/' not in line]
    assert len(lines) == 1 and lines[0].startswith('error: cannot download'), result.stderr
    assert not (tmp_path / 'data').exists()
