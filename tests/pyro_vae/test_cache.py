"""pyro-vae's one cache folder, as the data sets, crash logs and benchmark jobs find it."""

from pathlib import Path

from pyro_vae.cache import cache_dir


def test_the_cache_folder_follows_xdg_cache_home_else_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "pyro-vae"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # set but empty: unset, as the XDG rules say
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "pyro-vae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "pyro-vae"
