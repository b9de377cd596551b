"""Tests of sdis_tf/data/download.py with the network replaced: `urllib.request.urlopen` serves
small files of tmp_path (file:// URLs) or raises; no test reaches the real network."""

import hashlib
import io
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from sdis_tf.data import download
from sdis_tf.data.errors import DataFileError

BODY = os.urandom(3 * (1 << 20) + 123)     # three and a bit read chunks
URL = "https://example.org/files/a.zip"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty data cache: $SDIS_TF_DATA = tmp_path/cache."""
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """`urlopen` serving BODY for URL (from a file:// copy, as a real response), counting the
    requests; `delay` seconds before each answer."""
    published = tmp_path / "published.zip"
    published.write_bytes(BODY)
    real_urlopen = urllib.request.urlopen

    class Server:
        def __init__(self):
            self.requests, self.delay = [], 0.0

        def __call__(self, url, timeout=None):
            self.requests.append(url)
            time.sleep(self.delay)
            assert url == URL
            return real_urlopen(published.as_uri(), timeout=timeout)

    fake = Server()
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    return fake


def _remote(sha256=hashlib.sha256(BODY).hexdigest()):
    return download.RemoteFile("data/a.zip", URL, sha256)


def _refuse_network(monkeypatch):
    def refuse(url, timeout=None):
        raise AssertionError(f"unexpected download of {url}")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_first_use_downloads_verifies_and_places_then_reuses(cache, server, capsys,
                                                             monkeypatch):
    (cache / "data").mkdir(parents=True)
    (cache / "data" / "a.zip.part").write_bytes(b"left by a killed download")
    hashed = []
    digest = hashlib.sha256(BODY).hexdigest()
    monkeypatch.setattr(download, "sha256_of", lambda p: hashed.append(p) or digest)
    path = download.fetch(_remote())
    assert hashed == []                       # hashed while it streamed in, not read again
    assert path == str(cache / "data" / "a.zip") == download.cached_path(_remote())
    assert (cache / "data" / "a.zip").read_bytes() == BODY
    assert server.requests == [URL]
    assert os.listdir(cache / "data") == ["a.zip"]          # no partial file left
    assert "a.zip: 100%" in capsys.readouterr().err         # the progress bar, on stderr
    _refuse_network(monkeypatch)
    assert download.fetch(_remote()) == path                # second use: no download
    assert hashed == [path]                                 # ... but a check of the file


def test_cache_defaults_to_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(download.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.cache_dir() == str(tmp_path / ".cache" / "sdis_tf")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cache_dir() == str(tmp_path / "xdg" / "sdis_tf")
    monkeypatch.setenv(download.CACHE_ENV, "~/data")
    assert download.cache_dir() == str(tmp_path / "data")


def test_checksum_mismatch_is_refused_and_nothing_is_kept(cache, server):
    wrong = "0" * 64
    with pytest.raises(download.DownloadError) as error:
        download.fetch(_remote(sha256=wrong))
    path = cache / "data" / "a.zip"
    assert str(error.value) == (
        f"the download of {URL} has SHA-256 {hashlib.sha256(BODY).hexdigest()}, expected "
        f"{wrong}: not the published file (a proxy's page or a changed upstream file); "
        f"nothing was kept at {path}")
    assert os.listdir(cache / "data") == []


@pytest.mark.parametrize("failure,reason", [
    (urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")),
     "[Errno -3] Temporary failure in name resolution"),
    (urllib.error.HTTPError(URL, 404, "Not Found", {}, None), "HTTP Error 404: Not Found"),
    (TimeoutError("The read operation timed out"), "The read operation timed out"),
])
def test_no_network_is_one_line_naming_the_url_and_the_path(cache, monkeypatch, failure,
                                                             reason):
    def offline(url, timeout=None):
        raise failure
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataFileError) as error:      # the CLI's exit status 2
        download.fetch(_remote())
    path = cache / "data" / "a.zip"
    assert str(error.value) == (f"cannot download {URL} ({reason}); without network access, "
                                f"fetch that file elsewhere and put it at {path}")
    assert os.listdir(cache / "data") == []


def test_a_connection_lost_midway_leaves_no_file(cache, monkeypatch):
    class Cut(io.BytesIO):
        """A response whose connection drops after the first chunk."""
        headers = {"Content-Length": str(len(BODY))}

        def read(self, size=-1):
            if self.tell():
                raise ConnectionResetError(104, "Connection reset by peer")
            return super().read(size)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Cut(BODY))
    with pytest.raises(download.DownloadError, match=r"\(\[Errno 104\] Connection reset by "
                       r"peer\); without network access, fetch that file elsewhere and put it "
                       r"at .*a\.zip$"):
        download.fetch(_remote())
    assert os.listdir(cache / "data") == []


def test_a_file_put_in_the_cache_by_hand_is_used_and_a_wrong_one_refused(cache, monkeypatch):
    _refuse_network(monkeypatch)
    path = cache / "data" / "a.zip"
    path.parent.mkdir(parents=True)
    path.write_bytes(BODY)
    assert download.fetch(_remote()) == str(path)
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(download.DownloadError) as error:
        download.fetch(_remote())
    found = hashlib.sha256(b"<html>rate limited</html>").hexdigest()
    assert str(error.value) == (f"{path} has SHA-256 {found}, expected "
                                f"{hashlib.sha256(BODY).hexdigest()} (the file at {URL}); "
                                "delete it to download it again")
    assert path.read_bytes() == b"<html>rate limited</html>"   # the user's file is kept


def test_concurrent_first_uses_download_once(cache, server):
    server.delay = 0.3          # every caller arrives while the first one downloads
    paths, errors = [], []

    def use():
        try:
            paths.append(download.fetch(_remote()))
        except Exception as error:  # noqa: BLE001 -- reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and paths == [str(cache / "data" / "a.zip")] * 4
    assert server.requests == [URL]
    assert (cache / "data" / "a.zip").read_bytes() == BODY


def test_an_unwritable_cache_is_one_line(tmp_path, monkeypatch, server):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "file"))
    with pytest.raises(download.DownloadError, match=(
            rf"^cannot write {tmp_path / 'file' / 'data' / 'a.zip'} \(.*\); set SDIS_TF_DATA "
            r"to a writable folder for the data cache$")):
        download.fetch(_remote())
    assert server.requests == []
