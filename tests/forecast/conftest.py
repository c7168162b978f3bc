import numpy as np
import pytest


@pytest.fixture
def two_series_csv(tmp_path):
    """Two monthly series over 12 years: a seasonal one, and a trending one with gaps."""
    rng = np.random.default_rng(0)
    months = np.arange("2000-01", "2012-01", dtype="datetime64[M]")
    t = np.arange(len(months))
    a = 10 + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, len(t))
    b = 50 + 0.1 * t + rng.normal(0, 1, len(t))
    rows = ["month,a,b"] + [f"{m}-01,{x:.3f},{'' if i % 17 == 5 else f'{y:.3f}'}"
                            for i, (m, x, y) in enumerate(zip(months, a, b))]
    p = tmp_path / "two.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


@pytest.fixture
def refused(capsys):
    """Run ``rnnforge ARGV``; assert exit code 2, one stderr line and no traceback; return that line."""
    from rnnforge.cli import main

    def run(argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
        return lines[0]

    return run
