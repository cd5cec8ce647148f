import pytest
import torch

import radlab as rl
from radlab import profile


def test_setup_prints_one_line_and_seeds(capsys, monkeypatch):
    monkeypatch.delenv("RADLAB_PROFILE", raising=False)
    P = rl.setup(seed=3, profile="quick")
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "quick" in line and str(P.device) in line
    assert torch.__version__ in line and f"threads={P.threads}" in line
    a = torch.rand(3)
    rl.setup(seed=3, profile="quick", quiet=True)
    assert torch.equal(a, torch.rand(3)), "same seed must give the same numbers"


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("RADLAB_PROFILE", "standard")
    assert rl.setup(quiet=True).name == "standard"
    monkeypatch.setenv("RADLAB_PROFILE", "quick")
    assert rl.setup(quiet=True).name == "quick"
    monkeypatch.delenv("RADLAB_PROFILE")
    expected = "full" if torch.cuda.is_available() else "standard"
    assert rl.setup(quiet=True).name == expected


def test_profiles_grow_from_quick_to_full():
    quick, standard, full = (profile.make_profile(n) for n in profile.PROFILES)
    for field in ("size", "n_train", "n_test", "epochs", "repeats"):
        assert getattr(quick, field) <= getattr(standard, field) <= getattr(full, field), field


def test_every_section_has_all_three_profiles():
    for section, sizes in profile.SECTIONS.items():
        for key, column in sizes.items():
            assert set(column) == set(profile.PROFILES), f"SECTIONS[{section!r}][{key!r}] misses a profile"
        assert isinstance(getattr(profile.make_profile("quick"), section), object)


@pytest.mark.parametrize("bad, exc, words", [
    (dict(profile="fast"), ValueError, "profile"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), ValueError, "seed"),
])
def test_setup_rejects_bad_arguments(bad, exc, words):
    with pytest.raises(exc, match=words):
        rl.setup(quiet=True, **bad)


def test_unknown_section_names_the_sections():
    with pytest.raises(AttributeError, match="sections"):
        profile.make_profile("quick").nb99


def test_claim_prints_and_raises_only_when_strict(capsys, monkeypatch):
    monkeypatch.delenv("RADLAB_STRICT", raising=False)
    rl.setup(profile="standard", quiet=True)
    assert rl.claim(1 < 2, "one is less than two") is True
    assert rl.claim(torch.tensor(False), "a false claim") is False
    out = capsys.readouterr().out
    assert "✓ one is less than two" in out and "✗ a false claim" in out
    monkeypatch.setenv("RADLAB_STRICT", "1")
    with pytest.raises(rl.ClaimFailed, match="a false claim"):
        rl.claim(False, "a false claim")
    monkeypatch.delenv("RADLAB_STRICT")
    rl.setup(profile="quick", quiet=True)
    with pytest.raises(rl.ClaimFailed):
        rl.claim(False, "fails under quick")


@pytest.mark.parametrize("condition, text, exc", [
    (True, "", TypeError), (True, None, TypeError),
    (torch.tensor([True, False]), "two values", ValueError),
])
def test_claim_rejects_bad_arguments(condition, text, exc):
    with pytest.raises(exc):
        rl.claim(condition, text)


def test_import_is_cheap():
    import subprocess
    import sys
    code = "import sys, radlab; heavy = {'matplotlib', 'captum', 'ipywidgets', 'sklearn', 'pandas'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import radlab pulled in heavy modules: {out}"
